"""Rollback and the order of environments against the real MLflow registry (the deployment is a fake).

(d) production is refused without a staging pass of that exact version within the age
limit, unless an audited override is given; rollbacks put the previous champion back,
abort a running canary first, and record who and why.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid

import pytest

from tests.plugins.test_rollout_dag import FakeDeployment
from tollgate import rollout
from tollgate.deploy import CANARY, STABLE
from tollgate.exceptions import TollgateError
from tollgate.mlflow import registry


@pytest.fixture()
def model(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = f"orders-{uuid.uuid4().hex[:8]}"
    for n in (1, 2, 3):
        registry.register_model_version(name, f"s3://models/{name}/{n}", hashlib.sha256(b"w").hexdigest())
    registry.move_alias(name, "champion", "1", actor="test", reason="bootstrap")
    FakeDeployment.calls, FakeDeployment.slots, FakeDeployment.weight = [], {STABLE: "1"}, 0
    monkeypatch.setattr(rollout, "deployment_for", FakeDeployment)
    return name


def request(model: str, version: str) -> dict:
    return {"model_name": model, "model_version": version, "target_env": "production", "alias": "champion"}


def test_production_is_refused_without_staging_and_the_refusal_is_audited(model):
    with pytest.raises(TollgateError, match="production refused: .* no audited move to alias staging"):
        rollout.check_environment_order(request(model, "2"), override=False, override_reason="", actor="ann",
                                        dag_id="model_promotion", dag_run_id="r1")
    last = registry.alias_history(model, "champion")[-1]
    assert (last.action, last.candidate_version, last.actor) == ("refused_no_staging", "2", "ann")
    # staging of ANOTHER version does not count
    registry.move_alias(model, "staging", "3", actor="ann", reason="staging run")
    with pytest.raises(TollgateError, match="production refused"):
        rollout.check_environment_order(request(model, "2"), override=False, override_reason="", actor="ann",
                                        dag_id="model_promotion", dag_run_id="r2")
    registry.move_alias(model, "staging", "2", actor="ann", reason="staging run")
    ok = rollout.check_environment_order(request(model, "2"), override=False, override_reason="", actor="ann",
                                         dag_id="model_promotion", dag_run_id="r3")
    assert ok["required"] and ok["staging_record"]


def test_an_old_staging_pass_does_not_count(model):
    registry.move_alias(model, "staging", "2", actor="ann", reason="staging run")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=200)
    assert rollout.staging_record(model, "2", 168, now=later) is None
    assert rollout.staging_record(model, "2", 168) is not None


def test_the_override_needs_a_reason_and_is_audited(model):
    with pytest.raises(TollgateError, match="needs override_reason"):
        rollout.check_environment_order(request(model, "2"), override=True, override_reason=" ", actor="ann",
                                        dag_id="model_promotion", dag_run_id="r4")
    out = rollout.check_environment_order(request(model, "2"), override=True, override_reason="hotfix INC-7",
                                          actor="ann", dag_id="model_promotion", dag_run_id="r5")
    last = registry.alias_history(model, "champion")[-1]
    assert out["override"] == last.record_id and last.action == "staging_override" and "INC-7" in last.reason


def test_staging_target_needs_no_staging(model):
    assert rollout.check_environment_order({**request(model, "2"), "target_env": "staging"}, override=False,
                                           override_reason="", actor="a", dag_id="d", dag_run_id="r") == {
        "required": False}


def test_rollback_restores_the_previous_champion_and_aborts_a_running_canary(model, tmp_path, monkeypatch):
    monkeypatch.setenv("TOLLGATE_HOME", str(tmp_path))
    monkeypatch.setenv("TOLLGATE_NOTIFIER", "file")
    registry.move_alias(model, "champion", "2", actor="ann", reason="promoted")
    FakeDeployment.slots = {STABLE: "2", CANARY: "3"}
    out = rollout.rollback(model, to_version=None, actor="oncall", reason="p95 doubled", dag_id="model_rollback",
                           dag_run_id="r9")
    assert (out["from"], out["to"], out["aborted_canary"]) == ("2", "1", "3")
    assert FakeDeployment.calls == [("remove", CANARY), ("restore", "1")]  # abort first, then serve
    assert registry.get_alias(model, "champion") == "1"
    last = registry.alias_history(model, "champion")[-1]
    assert (last.action, last.actor, last.dag_id) == ("rollback", "oncall", "model_rollback")
    assert "p95 doubled" in last.reason and "canary 3 aborted" in last.reason
    note = json.loads((tmp_path / "notifications.jsonl").read_text().splitlines()[-1])
    assert note["kind"] == "rolled_back" and note["to"] == "1"


def test_rollback_to_a_named_version_and_refusals(model):
    out = rollout.rollback(model, to_version="3", actor="oncall", reason="known good", dag_id="cli")
    assert out["to"] == "3" and registry.get_alias(model, "champion") == "3"
    with pytest.raises(TollgateError, match="needs who"):
        rollout.rollback(model, to_version=None, actor="", reason="x")
    with pytest.raises(TollgateError, match="already the champion"):
        rollout.rollback(model, to_version="3", actor="oncall", reason="again")
