"""Drift -> retrain -> a promotion waiting in staging, for real, on the embedded default.

One stack (SeaweedFS, MLflow, an Airflow api-server; tests/dags/promotion_stack.py) with
one champion. Request-log Parquet rows go to S3 through evals.requestlog (the gateway's
own traffic is covered by its tests): a reference hour right after the champion's
promotion, a steady hour and a drifted hour. drift_monitor runs with ``as_of`` pinned to
those hours: steady traffic never triggers retrain; drifted traffic triggers it exactly
once inside the cooldown. Then a retrain run (a real LoRA fine-tune on CPU, few steps)
registers version 2 with its lineage, and the model_promotion run it triggers reaches the
approval step in staging.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.dags.promotion_stack import Stack, embedded_stack, load_dag, run_promotion
from tests.fixtures.airflow import REPO_ROOT
from tests.fixtures.traffic_rows import traffic
from tests.plugins.airflow_run import task_states, xcom

# a drift check is ~30 s; the retrain (real fine-tune) ~2 min; the promotion up to its approval 3-4 min
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]
MODEL = "smollm2-retrain"
ROWS = 1100  # request rows per hour: thresholds/drift.yaml asks for 1000 per window

# The promotion's gates here: absolute bounds a healthy SmolLM2 meets, nothing relative to
# a champion baseline (this stack's champion was never evaluated).
GATES = {
    "quality.yaml": "gates:\n  task_success: {metric: task_success_rate, min: 0.2}\n"
                    "  errors: {metric: error_rate, max: 0.05}\n",
    "safety.yaml": "gates:\n  pii_leakage: {metric: pii_leakage_rate, max: 0.10}\n"
                   "  errors: {metric: error_rate, max: 0.05}\n",
    "latency.yaml": "gates:\n  errors: {metric: error_rate, max: 0.01}\n",
    "canary.yaml": "gates:\n  error_rate: {metric: canary_error_rate, max: 0.02}\n",
    # model_promotion reads its canary rollout policy from the same folder when it is parsed
    "canary-policy.yaml": (REPO_ROOT / "thresholds" / "embedded" / "canary-policy.yaml").read_text(),
}


@pytest.fixture(scope="module")
def stack(s3_server, mlflow_server, migrated_airflow_db, tmp_path_factory) -> Iterator[Stack]:
    saved = os.environ.get("TOLLGATE_S3_BUCKET")
    os.environ["TOLLGATE_S3_BUCKET"] = s3_server.bucket
    try:
        with embedded_stack(MODEL, {"1": (True, 0.0)}, GATES, s3_server=s3_server, mlflow_server=mlflow_server,
                            tmp_path_factory=tmp_path_factory) as built:
            yield built
    finally:
        if saved is None:
            os.environ.pop("TOLLGATE_S3_BUCKET", None)
        else:
            os.environ["TOLLGATE_S3_BUCKET"] = saved


@pytest.fixture(scope="module")
def promoted(stack: Stack) -> datetime:
    """When the champion was promoted (its audit record), with the three hours of traffic after it written."""
    from evals import requestlog
    from tollgate import retrain
    from tollgate.mlflow import registry

    t0 = retrain.utc(registry.alias_history(MODEL, "champion")[-1].recorded_utc)
    hour = timedelta(hours=1)
    rows = (traffic(ROWS, t0 + timedelta(minutes=1), model=MODEL, seed=1)
            + traffic(ROWS, t0 + hour + timedelta(minutes=1), model=MODEL, seed=2)
            + traffic(ROWS, t0 + 2 * hour + timedelta(minutes=1), model=MODEL, seed=3, drifted=True))
    requestlog.write_table(rows, f"s3://{os.environ['TOLLGATE_S3_BUCKET']}")
    return t0


def monitor(as_of: datetime):
    from tollgate import retrain

    conf = {"model_name": MODEL, "window_hours": 1, "reference_hours": 1, "cooldown_hours": 24,
            "as_of": retrain.iso(as_of)}
    dr = load_dag("drift_monitor").test(run_conf=conf)
    return dr, task_states(dr)


def retrain_runs() -> list:
    from airflow.models.dagrun import DagRun

    return [r for r in DagRun.find(dag_id="retrain") if (r.conf or {}).get("model_name") == MODEL]


def test_steady_traffic_never_triggers_a_retrain(stack: Stack, promoted: datetime) -> None:
    from tollgate.mlflow import tracking

    dr, states = monitor(promoted + timedelta(hours=2, minutes=1))
    assert states["drift"] == "success" and states["record"] == "success", states
    assert states["trigger_retrain"] == "skipped", states
    verdict = xcom(dr, "record")
    assert verdict["drifted"] is False
    c = tracking.client()
    run = c.get_run(verdict["drift_run_id"])
    assert run.data.tags["tollgate.drift.status"] in ("no_drift", "warn")
    assert run.data.metrics["current_rows"] >= 1000
    # under the champion's promotion evidence (the bootstrap move has none: a top-level run then)
    plots = {os.path.basename(a.path) for a in c.list_artifacts(run.info.run_id, "plots")}
    assert {"psi.png", "embedding_projection.png", "hist_prompt_tokens.png"} <= plots, plots
    assert retrain_runs() == []


def test_drifted_traffic_triggers_retrain_exactly_once_inside_the_cooldown(stack: Stack, promoted: datetime) -> None:
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    as_of = promoted + timedelta(hours=3, minutes=1)
    dr, states = monitor(as_of)
    assert states["drift"] == "failed", "exit 1: drift"
    assert states["trigger_retrain"] == "success", states
    verdict = xcom(dr, "record")
    assert verdict["drifted"] is True and verdict["failed_gates"]
    (run,) = retrain_runs()
    assert run.conf["drift_run_id"] == verdict["drift_run_id"] and run.conf["reason"].startswith("drift: ")

    _, states = monitor(as_of)  # the retrain it triggered is still queued: no second one
    assert states["decide"] == "success" and states["trigger_retrain"] == "skipped", states
    assert len(retrain_runs()) == 1

    with create_session() as session:  # that retrain ended; the cooldown still holds
        session.merge(run).state = DagRunState.FAILED
    _, states = monitor(as_of)
    assert states["trigger_retrain"] == "skipped", states
    assert len(retrain_runs()) == 1


def test_retrain_registers_a_challenger_with_lineage_and_its_promotion_waits_for_approval(
        stack: Stack, promoted: datetime) -> None:
    from evals import requestlog
    from tollgate.mlflow import registry, tracking

    now = datetime.now(UTC)
    requestlog.write_table(traffic(300, now - timedelta(minutes=50), model=MODEL, seed=4),
                           f"s3://{os.environ['TOLLGATE_S3_BUCKET']}")
    (trigger,) = retrain_runs()
    conf = {**trigger.conf, "window_hours": 1, "max_steps": 6, "batch_size": 4, "min_examples": 10}
    started = time.monotonic()
    dr = load_dag("retrain").test(run_conf=conf)
    elapsed = time.monotonic() - started
    states = task_states(dr)
    assert dr.state == "success", states
    print(f"\nretrain run: {elapsed:.0f} s ({states})")

    out = xcom(dr, "register")
    assert out["model_version"] == "2"
    v1, v2 = registry.serving_config(MODEL, "1"), registry.serving_config(MODEL, "2")
    assert v2.manifest_sha256 != v1.manifest_sha256, "new weights, not a copy of the parent's"
    assert v2.prompt == v1.prompt, "the challenger serves with its parent's prompt"
    c = tracking.client()
    tags = c.get_model_version(MODEL, "2").tags
    dataset = json.loads((stack.home / "volumes" / "tollgate-models" / "results" / xcom(dr, "plan")["folder"]
                          / "dataset" / "dataset.json").read_text())
    assert tags["tollgate.lineage.parent_version"] == "1"
    assert tags["tollgate.lineage.dataset_sha256"] == dataset["sha256"]
    assert tags["tollgate.lineage.drift_run_id"] == trigger.conf["drift_run_id"]
    train_run = tags["tollgate.lineage.train_run_id"]
    assert len(c.get_metric_history(train_run, "train_loss")) == 6
    assert "loss_curve.json" in {a.path for a in c.list_artifacts(train_run)}
    assert c.get_run(train_run).data.params["lora_r"] == "8"
    s3 = stack_s3_keys(dataset["published"])
    assert {"train.jsonl", "eval.jsonl", "dataset.json"} <= s3, "the eval slice is a versioned dataset in S3"

    from airflow.models.dagrun import DagRun

    confs = [r.conf for r in DagRun.find(dag_id="model_promotion")]
    assert {"model_name": MODEL, "model_version": "2", "target_env": "staging"} in confs
    started = time.monotonic()
    pdr, pstates, outcome = run_promotion(stack, "2", answer="Reject", target_env="staging")
    print(f"model_promotion of v2 to its approval: {time.monotonic() - started:.0f} s")
    assert "error" not in outcome, outcome
    assert pstates["approval"] == "success" and f"Promote {MODEL}:2 to staging" in outcome["body"]
    last = registry.alias_history(MODEL, "staging")[-1]
    assert (last.action, last.candidate_version) == ("rejected", "2")


def stack_s3_keys(prefix: str) -> set[str]:
    from evals.requestlog import parse_root
    from evals.weights.s3 import s3_client

    root = parse_root(prefix)
    page = s3_client().list_objects_v2(Bucket=root.bucket, Prefix=root.prefix + "/")
    return {o["Key"].rsplit("/", 1)[-1] for o in page.get("Contents", [])}
