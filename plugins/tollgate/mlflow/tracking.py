"""MLflow tracking conventions: one experiment per model, a parent run per DAG run,
one child run per suite (evaluation or benchmark).

    parent = start_dag_run("smollm2-orders", "2", dag_id="model_promotion", dag_run_id=run_id)
    child = log_suite_run(parent, "quality", results="results/quality.json",
                          verdict="results/quality-verdict.json", report="results/quality.md",
                          plots=["results/latency_cdf.png"])
    finish_dag_run(parent, passed=True)
    baseline = latest_results("smollm2-orders", "1", "quality")   # a regression baseline

Every entry point takes ``tracking_uri=None``: explicit value, else ``MLFLOW_TRACKING_URI``,
else the embedded default ``http://127.0.0.1:$TOLLGATE_MLFLOW_PORT`` (5010). mlflow is imported
inside functions: DAG files import this module at parse time.

Retries are safe: a parent run is found again by (dag_id, dag_run_id) and a suite's child
run by (parent, suite), so a retried task logs into the run it started instead of
leaving a twin behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals import settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("tollgate.tracking")

EXPERIMENT_PREFIX = "tollgate/"

# Tag keys, in one place: the DAGs, the audit trail and the README read the same names.
TAG_KIND = "tollgate.kind"
TAG_MODEL = "tollgate.model"
TAG_VERSION = "tollgate.version"
TAG_SUITE = "tollgate.suite"
TAG_DATASET_SHA = "tollgate.dataset_sha256"
TAG_THRESHOLDS_SHA = "tollgate.thresholds_sha256"
TAG_CODE_REVISION = "tollgate.code_revision"
TAG_PASSED = "tollgate.gates_passed"
TAG_DAG_ID = "airflow.dag_id"
TAG_DAG_RUN_ID = "airflow.run_id"
KIND_DAG_RUN = "dag_run"
KIND_SUITE = "suite"

RESULTS_ARTIFACT = "results.json"
VERDICT_ARTIFACT = "gate_verdict.json"
REPORT_ARTIFACT = "report.md"
PLOTS_DIR = "plots"

# Keys that must never reach MLflow as params or tags, whatever a caller hands in.
_SECRET_KEY = re.compile(
    r"(?:^|[._-])(?:secret|password|passwd|token|api[_-]?key|access[_-]?key|credentials?|auth|authorization)"
    r"(?:[._-]|$)", re.I)  # whole words: max_tokens is a generation parameter, api_token is not
_MAX_PARAM_LEN = 6000  # MLflow's limit for a param value
_MAX_TAG_LEN = 8000


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """The MLflow tracking URI: explicit, else MLFLOW_TRACKING_URI, else the embedded default."""
    if explicit:
        return explicit
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"http://127.0.0.1:{settings.current().mlflow_port}"


def client(uri: str | None = None) -> MlflowClient:
    """An MlflowClient bound to one URI for tracking and registry (no global mlflow state)."""
    from mlflow import MlflowClient

    resolved = resolve_tracking_uri(uri)
    return MlflowClient(tracking_uri=resolved, registry_uri=resolved)


def experiment_name(model: str) -> str:
    return f"{EXPERIMENT_PREFIX}{model}"


def quote(value: str) -> str:
    """A value for an MLflow filter string. Quotes cannot be escaped there, so they are refused."""
    if "'" in value:
        raise ValueError(f"{value!r}: single quotes cannot appear in an MLflow filter value")
    return f"'{value}'"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def safe_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Params as MLflow wants them: strings, within its length limit, secrets dropped."""
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        if _SECRET_KEY.search(str(key)):
            log.warning("not logging param %r to MLflow: its name looks like a secret", key)
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        out[str(key)] = text[:_MAX_PARAM_LEN]
    return out


def _safe_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v)[:_MAX_TAG_LEN] for k, v in tags.items() if v is not None and not _SECRET_KEY.search(k)}


def ensure_experiment(model: str, *, tracking_uri: str | None = None, mlflow_client: MlflowClient | None = None) -> str:
    """The id of the model's experiment, created on first use (safe under concurrent callers)."""
    from mlflow.exceptions import MlflowException

    c = mlflow_client or client(tracking_uri)
    name = experiment_name(model)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return c.create_experiment(name, tags={TAG_MODEL: model})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        exp = c.get_experiment_by_name(name)  # another task created it between our two calls
        assert exp is not None
        return exp.experiment_id


def _find_run(c: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> Any | None:
    flt = " and ".join(f"tags.`{k}` = {quote(v)}" for k, v in tags.items())
    runs = c.search_runs([experiment_id], filter_string=flt, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def start_dag_run(
    model: str,
    version: str,
    *,
    dag_id: str,
    dag_run_id: str,
    code_revision: str | None = None,
    params: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
) -> str:
    """The parent run of one DAG run for one model version; returns its run id (found again on retry)."""
    c = client(tracking_uri)
    exp_id = ensure_experiment(model, mlflow_client=c)
    key = {TAG_KIND: KIND_DAG_RUN, TAG_DAG_ID: dag_id, TAG_DAG_RUN_ID: dag_run_id, TAG_VERSION: str(version)}
    existing = _find_run(c, exp_id, key)
    if existing is not None:
        run_id = existing.info.run_id
        if existing.info.status != "RUNNING":
            c.update_run(run_id, status="RUNNING")
        return run_id
    tags = {
        **key,
        TAG_MODEL: model,
        TAG_CODE_REVISION: code_revision or settings.current().code_revision or "unknown",
        "mlflow.runName": f"{dag_id} {model}:{version}",
    }
    run = c.create_run(exp_id, tags=_safe_tags(tags), run_name=f"{dag_id} {model}:{version}")
    if params:
        _log_params(c, run.info.run_id, params)
    return run.info.run_id


def _log_params(c: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException

    safe = safe_params(params)
    existing = c.get_run(run_id).data.params
    # MLflow refuses to change a logged param; on a retry keep the first value and say so.
    fresh = {k: v for k, v in safe.items() if k not in existing}
    for k in safe:
        if k in existing and existing[k] != safe[k]:
            log.warning("param %s already logged as %r on run %s; keeping it", k, existing[k], run_id)
    if fresh:
        try:
            c.log_batch(run_id, params=[Param(k, v) for k, v in fresh.items()])
        except MlflowException as exc:  # pragma: no cover - race with a concurrent writer
            log.warning("could not log params on %s: %s", run_id, exc)


def _load_json(value: str | os.PathLike[str] | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    return json.loads(Path(value).read_text())


def log_suite_run(
    parent_run_id: str,
    suite: str,
    *,
    results: str | os.PathLike[str] | Mapping[str, Any],
    verdict: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    report: str | os.PathLike[str] | None = None,
    plots: Iterable[str | os.PathLike[str]] = (),
    dataset_sha256: str | None = None,
    thresholds_sha256: str | None = None,
    params: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Log one suite's results under the DAG run's parent run; returns the child run id.

    ``results`` is the results JSON of evals.results (a path or the parsed dict): its numeric
    ``metrics`` become MLflow metrics (null/NaN are skipped: the gate already failed
    closed on them), its ``meta`` fills the provenance tags unless given explicitly.
    ``verdict`` is evals.gate_check's JSON output, ``report`` its markdown table.
    """
    from mlflow.entities import Metric

    c = client(tracking_uri)
    parent = c.get_run(parent_run_id)
    ptags = parent.data.tags
    exp_id = parent.info.experiment_id
    data = _load_json(results) or {}
    meta = data.get("meta") or {}
    verdict_data = _load_json(verdict)

    key = {TAG_KIND: KIND_SUITE, "mlflow.parentRunId": parent_run_id, TAG_SUITE: suite}
    existing = _find_run(c, exp_id, key)
    tags: dict[str, Any] = {
        **key,
        TAG_MODEL: ptags.get(TAG_MODEL, meta.get("model")),
        TAG_VERSION: ptags.get(TAG_VERSION, meta.get("version")),
        TAG_DAG_ID: ptags.get(TAG_DAG_ID),
        TAG_DAG_RUN_ID: ptags.get(TAG_DAG_RUN_ID),
        TAG_CODE_REVISION: meta.get("code_revision") or ptags.get(TAG_CODE_REVISION),
        TAG_DATASET_SHA: dataset_sha256 or meta.get("dataset_sha256"),
        TAG_THRESHOLDS_SHA: thresholds_sha256 or meta.get("thresholds_sha256")
        or (verdict_data or {}).get("thresholds_sha256"),
        "mlflow.runName": suite,
    }
    if verdict_data is not None and isinstance(verdict_data.get("passed"), bool):
        tags[TAG_PASSED] = str(verdict_data["passed"]).lower()
    if existing is not None:
        run_id = existing.info.run_id
        c.update_run(run_id, status="RUNNING")
    else:
        run_id = c.create_run(exp_id, tags=_safe_tags(tags), run_name=suite).info.run_id
    for k, v in _safe_tags(tags).items():
        c.set_tag(run_id, k, v)

    # Timestamps change on every retry and MLflow params are write-once: they stay in results.json.
    flat_meta = {f"meta.{k}": v for k, v in meta.items()
                 if isinstance(v, (str, int, float, bool)) and k not in ("started_utc", "finished_utc")}
    _log_params(c, run_id, {**flat_meta, **(params or {})})
    now_ms = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now_ms, 0) for k, v in (data.get("metrics") or {}).items() if _is_number(v)]
    for i in range(0, len(metrics), 900):  # log_batch takes at most 1000 metrics
        c.log_batch(run_id, metrics=metrics[i:i + 900])

    c.log_dict(run_id, data, RESULTS_ARTIFACT)
    if verdict_data is not None:
        c.log_dict(run_id, verdict_data, VERDICT_ARTIFACT)
    if report is not None:
        c.log_text(run_id, Path(report).read_text(), REPORT_ARTIFACT)
    for plot in plots:
        c.log_artifact(run_id, str(plot), PLOTS_DIR)
    status = "FINISHED"
    if verdict_data is not None and verdict_data.get("passed") is False:
        status = "FAILED"  # the suite ran; its gates did not pass (the run is evidence either way)
    c.set_terminated(run_id, status=status)
    return run_id


def finish_dag_run(
    parent_run_id: str, *, passed: bool, summary: Mapping[str, Any] | None = None, tracking_uri: str | None = None
) -> None:
    """Close the parent run: FINISHED when every gate passed, FAILED otherwise; ``summary`` as JSON."""
    c = client(tracking_uri)
    c.set_tag(parent_run_id, TAG_PASSED, str(bool(passed)).lower())
    if summary is not None:
        c.log_dict(parent_run_id, dict(summary), "summary.json")
    c.set_terminated(parent_run_id, status="FINISHED" if passed else "FAILED")


def run_url(run_id: str, *, tracking_uri: str | None = None) -> str:
    """A link to the run in the MLflow UI (for approval pages and reports)."""
    c = client(tracking_uri)
    run = c.get_run(run_id)
    base = resolve_tracking_uri(tracking_uri).rstrip("/")
    return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


def artifact_url(run_id: str, artifact_path: str, *, tracking_uri: str | None = None) -> str:
    """A direct link to one artifact file of a run, served by the MLflow server (e.g. a plot image)."""
    import urllib.parse

    base = resolve_tracking_uri(tracking_uri).rstrip("/")
    query = urllib.parse.urlencode({"path": artifact_path, "run_uuid": run_id})
    return f"{base}/get-artifact?{query}"


def latest_suite_run(
    model: str, version: str, suite: str, *, dag_id: str | None = None, exclude_parent_run_id: str | None = None,
    tracking_uri: str | None = None,
) -> Any | None:
    """The newest finished suite run of model:version (optionally of one DAG), or None."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(experiment_name(model))
    if exp is None:
        return None
    flt = (f"tags.`{TAG_KIND}` = '{KIND_SUITE}' and tags.`{TAG_VERSION}` = {quote(str(version))} "
           f"and tags.`{TAG_SUITE}` = {quote(suite)} and attributes.status != 'RUNNING'")
    if dag_id is not None:
        flt += f" and tags.`{TAG_DAG_ID}` = {quote(dag_id)}"
    if exclude_parent_run_id is not None:
        flt += f" and tags.`mlflow.parentRunId` != {quote(exclude_parent_run_id)}"
    runs = c.search_runs([exp.experiment_id], filter_string=flt, order_by=["attributes.start_time DESC"],
                         max_results=1)
    return runs[0] if runs else None


def latest_results(
    model: str, version: str, suite: str, *, dag_id: str | None = None, exclude_parent_run_id: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any] | None:
    """The results JSON last logged for model:version and suite, or None: a regression baseline.

    ``dag_id="nightly_eval", exclude_parent_run_id=this_parent`` gives the previous nightly
    of the same version; ``registry.champion_results`` gives the champion's.
    ``meta.mlflow_run_id`` names the run it came from.
    """
    run = latest_suite_run(model, version, suite, dag_id=dag_id, exclude_parent_run_id=exclude_parent_run_id,
                           tracking_uri=tracking_uri)
    if run is None:
        return None
    c = client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="tollgate-baseline-") as tmp:
        path = c.download_artifacts(run.info.run_id, RESULTS_ARTIFACT, tmp)
        data = json.loads(Path(path).read_text())
    meta = data.setdefault("meta", {})
    meta.setdefault("mlflow_run_id", run.info.run_id)
    return data

