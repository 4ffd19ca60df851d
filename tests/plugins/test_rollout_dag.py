"""The progressive canary's tasks, run by dag.test(): deferrable steps, abort, full rollout, retirement.

The deployment and Prometheus are replaced by fakes here (the live path is in
tests/dags/test_promotion_e2e.py); Airflow, the triggers, the deferrals, the gate
check subprocess and the notifier file are real.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from airflow.sdk import DAG, task

from tests.plugins.airflow_run import run_dag_test, task_states, xcom
from tollgate import rollout
from tollgate.deploy import CANARY, PREVIOUS, STABLE, DeploymentState, Slot

POLICY = """
steps:
  - {weight: 10, hold_s: 0.6}
  - {weight: 50, hold_s: 0.6}
  - {weight: 100, hold_s: 0.3}
analysis: {interval_s: 0.3, window_s: 30, max_failed_checks: 1, inconclusive_deadline_s: 5, min_requests_per_arm: 5}
checks:
  error_ratio: {max: 0.05, max_delta_vs_stable: 0.05}
  latency_p95_s: {max: 20, max_ratio_vs_stable: 3}
  ttft_p95_s: {max: 10, max_ratio_vs_stable: 3}
  guardrail_rate: {max: 0.2, max_delta_vs_stable: 0.1}
  quality: {min: 0.3, max_drop_vs_stable: 0.3, min_samples: 5, source: prometheus}
old_stable_warm_s: 0.3
"""
GATES = "gates:\n  error_rate: {metric: canary_error_rate, max: 0.05}\n  quality: {metric: canary_quality, min: 0.3}\n"


class FakeDeployment:
    """In memory, recording every call in order (what the tasks asked the serving layer to do)."""

    calls: list = []
    slots: dict = {}
    weight = 0

    def __init__(self, model):
        self.model = model

    def deploy(self, slot, version):
        self.calls.append(("deploy", slot, version))
        FakeDeployment.slots[slot] = version
        return Slot(version, "http://fake")

    def set_weight(self, w):
        self.calls.append(("set_weight", w))
        FakeDeployment.weight = w
        return self.state()

    def state(self):
        s = FakeDeployment.slots
        return DeploymentState(self.model, Slot(s[STABLE]) if STABLE in s else None,
                               Slot(s[CANARY]) if CANARY in s else None, FakeDeployment.weight,
                               Slot(s[PREVIOUS]) if PREVIOUS in s else None)

    def remove(self, slot):
        self.calls.append(("remove", slot))
        FakeDeployment.slots.pop(slot, None)
        if slot == CANARY:
            FakeDeployment.weight = 0
        return self.state()

    def promote_canary(self):
        self.calls.append(("promote_canary",))
        s = FakeDeployment.slots
        s[PREVIOUS], s[STABLE] = s[STABLE], s.pop(CANARY)
        FakeDeployment.weight = 0
        return self.state()

    def restore(self, version):
        self.calls.append(("restore", version))
        FakeDeployment.slots[STABLE] = version
        return self.state()


def prometheus(canary_error_ratio: float):
    """Answers the analysis' PromQL by shape: 100 requests per arm, the given canary error ratio."""

    def query(expr):
        arm = re.search(r'arm="(\w+)"', expr).group(1)
        if expr.startswith("((sum(increase(llm_requests_total"):  # requests routed to the arm (+ fallbacks)
            return [({}, 100.0)]
        if expr.startswith("(sum(increase(llm_errors_total"):
            return [({}, canary_error_ratio if arm == "canary" else 0.0)]
        if expr.startswith("(sum(increase(llm_guardrail"):
            return [({}, 0.0)]
        if expr.startswith("histogram_quantile"):
            return [({}, 1.0)]
        if "llm_quality_score_bucket" in expr:
            return [({"le": "0.5"}, 0.0), ({"le": "1.0"}, 20.0), ({"le": "+Inf"}, 20.0)]
        raise AssertionError(expr)

    return query


@pytest.fixture
def canary_env(monkeypatch, tmp_path):
    policy = tmp_path / "canary-policy.yaml"
    policy.write_text(POLICY)
    gates = tmp_path / "canary.yaml"
    gates.write_text(GATES)
    monkeypatch.setenv("TOLLGATE_CANARY_POLICY", str(policy))
    monkeypatch.setenv("TOLLGATE_CANARY_THRESHOLDS", str(gates))
    FakeDeployment.calls, FakeDeployment.slots, FakeDeployment.weight = [], {STABLE: "1"}, 0
    monkeypatch.setattr(rollout, "deployment_for", FakeDeployment)
    decisions = []
    from tollgate.mlflow import registry

    class Rec:
        record_id = "rec-1"

    monkeypatch.setattr(registry, "record_decision", lambda *a, **k: decisions.append((a, k)) or Rec())
    return {"decisions": decisions, "gates": str(gates)}


def build(dag_id: str, gates: str):
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        @task
        def validate_request():
            return {"model_name": "orders", "model_version": "2", "champion_version": "1", "alias": "champion",
                    "target_env": "production"}

        req = validate_request()
        tasks = rollout.build_progressive_canary(model="orders", version="2", results_dir=f"{dag_id}/run/orders-2",
                                                 traffic="", dag_id=dag_id, gate_file=gates)
        req >> tasks["deploy"]
    return dag


@pytest.mark.usefixtures("airflow_db")
def test_a_healthy_canary_walks_every_step_then_rolls_out_and_retires(canary_env, monkeypatch):
    monkeypatch.setattr(rollout, "query_for", lambda: prometheus(0.0))
    run = run_dag_test(build("rollout_good", canary_env["gates"]))
    states = task_states(run)
    assert states == {"validate_request": "success", "deploy_candidate": "success", "canary_10": "success",
                      "canary_50": "success", "canary_100": "success", "canary_verdict": "success",
                      "gate_canary": "success", "full_rollout": "success", "abort_canary": "skipped",
                      "retire_previous": "success"}, states
    assert FakeDeployment.calls == [("deploy", CANARY, "2"), ("set_weight", 10), ("set_weight", 50),
                                    ("set_weight", 100), ("promote_canary",), ("remove", PREVIOUS)]
    step = xcom(run, "canary_10")
    assert step["weight"] == 10 and step["analyses"] >= 1 and step["result"]["phase"] == "Successful"
    verdict = json.loads(Path(xcom(run, "canary_verdict")).read_text())
    assert verdict["meta"]["weights"] == [10, 50, 100] and verdict["metrics"]["canary_error_rate"] == 0.0
    assert xcom(run, "retire_previous") == {"retired": "1"}


@pytest.mark.usefixtures("airflow_db")
def test_a_failing_canary_aborts_at_the_first_step_with_weight_zero_and_an_audit_record(canary_env, monkeypatch):
    monkeypatch.setattr(rollout, "query_for", lambda: prometheus(0.5))
    run = run_dag_test(build("rollout_bad", canary_env["gates"]))
    states = task_states(run)
    assert states["canary_10"] == "failed" and states["abort_canary"] == "failed"
    assert states["canary_50"] == "upstream_failed" and states["full_rollout"] == "upstream_failed"
    # weight 0 at once in the step, then the slot removed; nothing promoted
    assert FakeDeployment.calls == [("deploy", CANARY, "2"), ("set_weight", 10), ("set_weight", 0),
                                    ("remove", CANARY)]
    info = xcom(run, "canary_10", rollout.ABORT_KEY)
    assert info["weight"] == 10 and info["analyses"] == 1 and info["failed_checks"][0]["name"] == "error_ratio"
    [(args, kwargs)] = canary_env["decisions"]
    assert kwargs["decision"] == "canary_aborted" and "error_ratio 0.5 > 0.05" in kwargs["reason"]
    assert args[:3] == ("orders", "champion", "2")


@pytest.mark.usefixtures("airflow_db")
def test_a_canary_whose_verdict_fails_the_gate_is_rolled_back_not_rolled_out(canary_env, monkeypatch, tmp_path):
    # Every step Successful, but the whole-canary verdict misses a bar: abort, slot removed, nothing promoted.
    strict = tmp_path / "strict.yaml"
    strict.write_text("gates:\n  quality: {metric: canary_quality, min: 0.99}\n")
    monkeypatch.setattr(rollout, "query_for", lambda: prometheus(0.0))
    run = run_dag_test(build("rollout_gate_fails", str(strict)))
    states = task_states(run)
    assert all(states[f"canary_{w}"] == "success" for w in (10, 50, 100)), states
    assert states["gate_canary"] == "failed" and states["abort_canary"] == "failed", states
    assert states["full_rollout"] == "upstream_failed", states
    calls = FakeDeployment.calls
    assert ("promote_canary",) not in calls and calls[-1] == ("remove", CANARY), calls
    assert FakeDeployment.weight == 0 and CANARY not in FakeDeployment.slots and FakeDeployment.slots[STABLE] == "1"
    [(args, kwargs)] = canary_env["decisions"]
    assert kwargs["decision"] == "canary_aborted" and args[:3] == ("orders", "champion", "2")
