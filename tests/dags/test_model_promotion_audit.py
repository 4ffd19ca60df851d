"""model_promotion's promote and finalize tasks: the audit records they write name the DAG and the run."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from airflow.sdk.exceptions import AirflowFailException

from tests.fixtures.airflow import REPO_ROOT
from tollgate.approvals import DECISION_KEY
from tollgate.mlflow import registry

RUN_ID = "manual__2026-11-25T09:06:29+00:00"


class FakeTI:
    """What the two tasks read from their task instance: upstream XComs."""

    def __init__(self, xcoms: dict[tuple[str, str], object], task_id: str = "promote") -> None:
        self.xcoms = xcoms
        self.task_id = task_id

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> object:
        return self.xcoms.get((task_ids, key))

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[(self.task_id, key)] = value


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "model_promotion.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["model_promotion"]


@pytest.fixture()
def request_(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    model = f"orders-{uuid.uuid4().hex[:8]}"
    for n in (1, 2):
        registry.register_model_version(model, f"s3://models/{model}/{n}", hashlib.sha256(b"w").hexdigest())
    registry.move_alias(model, "champion", "1", actor="test", reason="bootstrap")
    return {"model_name": model, "model_version": "2", "alias": "champion", "target_env": "production",
            "current_target": "1"}  # as validate_request saw it


def test_promote_records_the_dag_and_the_run(dag, request_: dict) -> None:
    approved = {"chosen_options": ["Approve"], "responded_by_user": {"id": "ann", "name": "Ann"}}
    ti = FakeTI({("approval", DECISION_KEY): approved})
    moved = dag.get_task("promote").python_callable(request_, {"run_id": "evidence-1"}, run_id=RUN_ID, ti=ti)
    assert moved["changed"] and registry.get_alias(request_["model_name"], "champion") == "2"
    last = registry.alias_history(request_["model_name"], "champion")[-1]
    assert (last.action, last.actor, last.dag_id, last.dag_run_id) == ("move", "Ann", "model_promotion", RUN_ID)


def test_finalize_records_the_dag_and_the_run(dag, request_: dict) -> None:
    ti = FakeTI({("record_evidence", "return_value"): {"failed_gates": ["quality/regression"], "run_id": "ev-2"}})
    with pytest.raises(AirflowFailException, match="gate_failed"):
        dag.get_task("finalize").python_callable(request_, run_id=RUN_ID, ti=ti)
    last = registry.alias_history(request_["model_name"], "champion")[-1]
    assert (last.action, last.candidate_version, last.evidence_run_id) == ("gate_failed", "2", "ev-2")
    assert (last.dag_id, last.dag_run_id) == ("model_promotion", RUN_ID)


def test_promote_refuses_when_someone_else_moved_the_champion(dag, request_: dict) -> None:
    registry.register_model_version(request_["model_name"], f"s3://models/{request_['model_name']}/3",
                                    hashlib.sha256(b"w3").hexdigest())
    registry.move_alias(request_["model_name"], "champion", "3", actor="someone", reason="their own promotion")
    approved = {"chosen_options": ["Approve"], "responded_by_user": {"id": "ann", "name": "Ann"}}
    ti = FakeTI({("approval", DECISION_KEY): approved})
    with pytest.raises(AirflowFailException, match="someone else moved it"):
        dag.get_task("promote").python_callable(request_, {"run_id": "evidence-1"}, run_id=RUN_ID, ti=ti)
    assert registry.get_alias(request_["model_name"], "champion") == "3"  # not overwritten
    with pytest.raises(AirflowFailException, match="alias_conflict"):
        dag.get_task("finalize").python_callable(request_, run_id=RUN_ID, ti=ti)
    last = registry.alias_history(request_["model_name"], "champion")[-1]
    assert (last.action, last.candidate_version, last.dag_run_id) == ("alias_conflict", "2", RUN_ID)
