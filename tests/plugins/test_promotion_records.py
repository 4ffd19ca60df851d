"""tollgate.promotion's alias moves and endings: each audit record names the DAG run it came from."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from tollgate import promotion
from tollgate.mlflow import registry


@pytest.fixture()
def model(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = f"orders-{uuid.uuid4().hex[:8]}"
    for n in (1, 2):
        registry.register_model_version(name, f"s3://models/{name}/{n}", hashlib.sha256(b"w").hexdigest())
    registry.move_alias(name, "champion", "1", actor="test", reason="bootstrap")
    return name


def test_a_promotion_records_its_dag_run(model: str) -> None:
    moved = promotion.promote(model, "2", "champion", approver="ann", evidence_run_id="evidence-1",
                              canary={"decision": "promote"}, dag_id="model_promotion", dag_run_id="manual__7")
    assert (moved["from"], moved["to"], moved["changed"]) == ("1", "2", True)
    last = registry.alias_history(model, "champion")[-1]
    assert (last.action, last.actor, last.evidence_run_id) == ("move", "ann", "evidence-1")
    assert (last.dag_id, last.dag_run_id) == ("model_promotion", "manual__7")


def test_an_ending_without_a_move_records_its_dag_run(model: str) -> None:
    promotion.record_no_move(model, "2", "champion", decision="rejected", actor="bob", evidence_run_id="evidence-2",
                             why="approval rejected", dag_id="model_promotion", dag_run_id="manual__8")
    last = registry.alias_history(model, "champion")[-1]
    assert (last.action, last.candidate_version, last.from_version, last.to_version) == ("rejected", "2", "1", "1")
    assert (last.dag_id, last.dag_run_id) == ("model_promotion", "manual__8")
