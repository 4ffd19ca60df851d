"""tollgate.mlflow.tracking: the run conventions and the regression baselines, against a real MLflow server."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

from tollgate.mlflow import registry, tracking

SHA_A = hashlib.sha256(b"weights-a").hexdigest()


def _register(model: str, uri: str, n: int) -> str:
    return str(registry.register_model_version(model, f"s3://models/{model}/{n}", SHA_A, tracking_uri=uri).version)


def _png(path: Path) -> Path:
    """A valid 1x1 PNG, written by hand (no plotting library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    raw += chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")
    path.write_bytes(raw)
    return path


def test_parent_and_child_runs_carry_the_conventions_and_feed_the_baseline(
    uri: str, model: str, tmp_path: Path
) -> None:
    v1 = _register(model, uri, 1)
    parent = tracking.start_dag_run(model, v1, dag_id="nightly_eval", dag_run_id="scheduled__2026-11-25",
                                    code_revision="abc123", params={"target_env": "staging",
                                                                    "aws_secret_access_key": "hunter2"},
                                    tracking_uri=uri)
    assert tracking.start_dag_run(model, v1, dag_id="nightly_eval", dag_run_id="scheduled__2026-11-25",
                                  tracking_uri=uri) == parent  # a retried task finds its run again
    results = {
        "metrics": {"task_success_rate": 0.93, "groundedness_score": 0.88, "judge_score": None},
        "samples": [{"id": "order-001", "task_success": 1}],
        "meta": {"model": model, "version": v1, "suite": "quality", "dataset_sha256": "d" * 64,
                 "code_revision": "abc123", "started_utc": "2026-11-25T00:00:00Z"},
    }
    verdict = {"passed": True, "thresholds_sha256": "t" * 64, "gates": [{"name": "task_success", "passed": True}]}
    report = tmp_path / "report.md"
    report.write_text("### quality: PASSED\n")
    child = tracking.log_suite_run(parent, "quality", results=results, verdict=verdict, report=report,
                                   plots=[_png(tmp_path / "latency_cdf.png")],
                                   params={"api_token": "x", "OPENAI_API_KEY": "sk", "max_tokens": 24},
                                   tracking_uri=uri)
    c = tracking.client(uri)
    run = c.get_run(child)
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == parent
    assert (tags[tracking.TAG_MODEL], tags[tracking.TAG_VERSION], tags[tracking.TAG_SUITE]) == (model, v1, "quality")
    assert tags[tracking.TAG_DATASET_SHA] == "d" * 64 and tags[tracking.TAG_THRESHOLDS_SHA] == "t" * 64
    assert (tags[tracking.TAG_DAG_ID], tags[tracking.TAG_DAG_RUN_ID]) == ("nightly_eval", "scheduled__2026-11-25")
    assert tags[tracking.TAG_CODE_REVISION] == "abc123" and tags[tracking.TAG_PASSED] == "true"
    assert run.data.metrics == {"task_success_rate": 0.93, "groundedness_score": 0.88}
    assert run.data.params["meta.dataset_sha256"] == "d" * 64
    assert "api_token" not in run.data.params and "OPENAI_API_KEY" not in run.data.params
    assert run.data.params["max_tokens"] == "24"  # a generation parameter, not a secret
    assert "meta.started_utc" not in run.data.params
    assert "aws_secret_access_key" not in c.get_run(parent).data.params
    assert c.get_run(parent).data.params["target_env"] == "staging"
    assert run.info.experiment_id == c.get_experiment_by_name(f"tollgate/{model}").experiment_id
    artifacts = {a.path for a in c.list_artifacts(child)} | {a.path for a in c.list_artifacts(child, "plots")}
    assert {"results.json", "gate_verdict.json", "report.md", "plots/latency_cdf.png"} <= artifacts

    # A retried logging task reuses the suite's child run.
    results["metrics"]["task_success_rate"] = 0.95
    assert tracking.log_suite_run(parent, "quality", results=results, verdict=verdict, tracking_uri=uri) == child
    tracking.finish_dag_run(parent, passed=True, summary={"gates": "all passed"}, tracking_uri=uri)
    assert c.get_run(parent).info.status == "FINISHED"

    assert registry.champion_results(model, "quality", tracking_uri=uri) is None  # no champion yet
    registry.move_alias(model, "champion", v1, "alice", "first", parent, tracking_uri=uri)
    baseline = registry.champion_results(model, "quality", tracking_uri=uri)
    assert baseline is not None
    assert baseline["metrics"]["task_success_rate"] == 0.95
    assert baseline["meta"]["mlflow_run_id"] == child
    assert tracking.latest_results(model, v1, "safety", tracking_uri=uri) is None
    assert tracking.latest_results(model, v1, "quality", dag_id="model_promotion", tracking_uri=uri) is None
    # The previous nightly of the same version: not the run we are in.
    assert tracking.latest_results(model, v1, "quality", dag_id="nightly_eval", exclude_parent_run_id=parent,
                                   tracking_uri=uri) is None
    nxt = tracking.start_dag_run(model, v1, dag_id="nightly_eval", dag_run_id="scheduled__2026-11-26", tracking_uri=uri)
    tracking.log_suite_run(nxt, "quality", results={"metrics": {"task_success_rate": 0.5}, "meta": {}}, tracking_uri=uri)
    previous = tracking.latest_results(model, v1, "quality", dag_id="nightly_eval", exclude_parent_run_id=nxt,
                                       tracking_uri=uri)
    assert previous is not None and previous["metrics"]["task_success_rate"] == 0.95
    assert tracking.run_url(child, tracking_uri=uri).endswith(f"/runs/{child}")


def test_failed_gates_mark_the_suite_run_failed(uri: str, model: str) -> None:
    v1 = _register(model, uri, 1)
    parent = tracking.start_dag_run(model, v1, dag_id="model_promotion", dag_run_id="manual__x", tracking_uri=uri)
    child = tracking.log_suite_run(parent, "safety", results={"metrics": {"refusal_rate": 0.5}, "meta": {}},
                                   verdict={"passed": False, "gates": []}, tracking_uri=uri)
    c = tracking.client(uri)
    assert c.get_run(child).info.status == "FAILED"
    assert c.get_run(child).data.tags[tracking.TAG_PASSED] == "false"
    tracking.finish_dag_run(parent, passed=False, tracking_uri=uri)
    assert c.get_run(parent).info.status == "FAILED"
    # Results of a failed suite still serve as evidence, and as the version's latest results.
    latest = tracking.latest_results(model, v1, "safety", tracking_uri=uri)
    assert latest is not None and latest["metrics"]["refusal_rate"] == 0.5
