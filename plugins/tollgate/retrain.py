"""Drift gates retraining: the decisions and records of ``drift_monitor`` and ``retrain``.

Pure functions first (tests call them directly), then the MLflow adapters; DAG files wire
them into tasks. mlflow is imported inside ``tollgate.mlflow`` calls, never here at import.

- :func:`windows`: the reference window (the hours right after the champion was promoted,
  from the alias audit trail) and the current window (the last hours of traffic);
- :func:`decide`: whether a drift verdict triggers ``retrain`` now: only on a failed drift
  gate, never while a retrain of the same model is still open, at most once per cooldown;
- :func:`log_drift_run`: every drift statistic, the verdict and the plots as one MLflow run
  under the champion's promotion evidence run (the trigger ledger lives in its tags);
- :func:`plan_retrain` and :func:`register_challenger`: what a retrain trains from, and the
  new version registered with its lineage (parent, dataset hash, drift run, training run).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tollgate.exceptions import RegistryError, TollgateError

if TYPE_CHECKING:
    from tollgate.mlflow.audit import AliasAuditRecord

log = logging.getLogger("tollgate.retrain")

DRIFT_DAG_ID = "drift_monitor"
RETRAIN_DAG_ID = "retrain"
KIND_DRIFT = "drift"
KIND_TRAIN = "train"
TAG_TRIGGER_RUN = "tollgate.retrain.run_id"  # on a drift run: the retrain DAG run it triggered
TAG_TRIGGERED_UTC = "tollgate.retrain.triggered_utc"
TAG_DRIFTED = "tollgate.drift.detected"
LINEAGE = "tollgate.lineage."  # tag prefix on a retrained model version
OPEN_STATES = ("queued", "running")
_METRIC_NAME = re.compile(r"[^A-Za-z0-9_.\-/ ]+")


def utc(value: datetime | str) -> datetime:
    """An aware UTC datetime from a datetime (naive = UTC) or ISO 8601 text (``Z`` allowed)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def as_of(value: str | None) -> datetime | None:
    """The ``as_of`` Param: empty for now, else an ISO 8601 time (a bad one is refused, naming the Param)."""
    if not value or not str(value).strip():
        return None
    try:
        return utc(str(value).strip())
    except ValueError:
        raise TollgateError(f"param as_of {value!r} is not an ISO 8601 time") from None


def iso(value: datetime) -> str:
    return utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- windows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """What one drift check compares, as ISO 8601 UTC times (XCom-friendly)."""

    model: str
    champion_version: str
    promoted_utc: str
    evidence_run_id: str | None
    reference_start: str
    reference_end: str
    current_start: str
    current_end: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def promotion_record(records: Iterable[AliasAuditRecord], champion: str) -> AliasAuditRecord | None:
    """The newest applied move that put the champion alias on ``champion`` (its promotion)."""
    moves = [r for r in records if r.alias == "champion" and r.applied and r.to_version == str(champion)
             and r.action in ("move", "rollback")]
    return max(moves, key=lambda r: (r.seq, r.record_id)) if moves else None


def windows(model: str, champion: str, record: AliasAuditRecord | None, now: datetime, *,
            window_hours: float, reference_hours: float) -> Windows | None:
    """The reference window starts at the champion's promotion and lasts ``reference_hours``; the
    current window is the last ``window_hours`` before ``now``.

    None while the two overlap (the champion is too new to have a reference of its own yet):
    comparing traffic with itself would say nothing. No audited promotion is an error: without
    it there is no reference, and a check that cannot decide must not say "no drift".
    """
    if record is None:
        raise TollgateError(f"{model}: no audited promotion of champion version {champion} in the alias history; "
                            "the drift reference window starts at that promotion")
    if window_hours <= 0 or reference_hours <= 0:
        raise TollgateError("window_hours and reference_hours must be > 0")
    promoted = utc(record.recorded_utc)
    ref_end = promoted + timedelta(hours=reference_hours)
    cur_end = utc(now)
    cur_start = cur_end - timedelta(hours=window_hours)
    if ref_end > cur_start:
        return None
    return Windows(model=model, champion_version=str(champion), promoted_utc=iso(promoted),
                   evidence_run_id=record.evidence_run_id, reference_start=iso(promoted), reference_end=iso(ref_end),
                   current_start=iso(cur_start), current_end=iso(cur_end))


def champion_windows(model: str, now: datetime, *, window_hours: float, reference_hours: float) -> Windows | None:
    """:func:`windows` for the model's champion now, from the registry and its audit trail."""
    from tollgate.mlflow import registry

    champion = registry.get_alias(model, registry.CHAMPION)
    if champion is None:
        raise TollgateError(f"{model} has no champion: nothing to watch for drift")
    record = promotion_record(registry.alias_history(model, registry.CHAMPION), champion)
    return windows(model, champion, record, now, window_hours=window_hours, reference_hours=reference_hours)


# -- the trigger decision ----------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    trigger: bool
    reason: str


def decide(*, drifted: bool, now: datetime, last_triggered: datetime | None, open_run: str | None,
           cooldown: timedelta) -> Decision:
    """Trigger ``retrain`` only for a failed drift gate, with no retrain of the model still open,
    and at most once per ``cooldown`` (counted from the last trigger, whatever became of it)."""
    if not drifted:
        return Decision(False, "no drift gate failed")
    if open_run:
        return Decision(False, f"retrain run {open_run} of this model is still open")
    if last_triggered is not None:
        since = utc(now) - utc(last_triggered)
        if since < cooldown:
            return Decision(False, f"cooldown: the last retrain was triggered {since.total_seconds() / 3600:.1f} h "
                                   f"ago ({iso(last_triggered)}), cooldown {cooldown.total_seconds() / 3600:g} h")
    return Decision(True, "drift gate(s) failed")


def retrain_run_id(model: str, now: datetime) -> str:
    return f"drift__{model}__{utc(now):%Y%m%dT%H%M%S}"


def drift_verdict(verdict: Mapping[str, Any] | None) -> tuple[bool, list[str]]:
    """(drifted, drifted metrics) from the ``verdict`` section of evals.drift's results.

    A failed data check is no verdict at all (the run fails: nothing was judged), and neither
    is a missing section: a check that cannot decide never says "no drift".
    """
    if not verdict or "status" not in verdict:
        raise TollgateError("no drift verdict: the drift check did not finish, so nothing can be decided")
    status = verdict["status"]
    if status == "check_failed":
        failures = "; ".join(str(f) for f in (verdict.get("check_failures") or [])[:3]) or "see the report"
        raise TollgateError(f"a window failed its data checks, no drift verdict: {failures}")
    if status not in ("drift", "no_drift", "warn"):
        raise TollgateError(f"drift verdict status {status!r} is not drift, no_drift, warn or check_failed")
    return status == "drift", [str(m) for m in verdict.get("drifted") or []]


# -- MLflow: the drift run and the trigger ledger ------------------------------------------------


def flat_metrics(report: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite number of a drift report, as MLflow metric names (``features.prompt_tokens.psi``)."""
    out: dict[str, float] = {}
    for key, value in report.items():
        name = _METRIC_NAME.sub("_", f"{prefix}{key}")[:250]
        if isinstance(value, Mapping):
            out.update(flat_metrics(value, name + "."))
        elif isinstance(value, bool) or isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = float(value)
    return out


def _drift_key(dag_run_id: str) -> dict[str, str]:
    from tollgate.mlflow import tracking

    return {tracking.TAG_KIND: KIND_DRIFT, tracking.TAG_DAG_ID: DRIFT_DAG_ID, tracking.TAG_DAG_RUN_ID: dag_run_id}


def log_drift_run(win: Mapping[str, Any], *, dag_run_id: str, report: Path, extra: Iterable[Path] = (),
                  plots: Iterable[Path] = (), tracking_uri: str | None = None) -> str:
    """One MLflow run per drift check, a child of the champion's promotion evidence run (when
    it is in the model's experiment): every statistic as a metric, report, verdict, plots."""
    from mlflow.entities import Metric

    from tollgate.mlflow import tracking

    c = tracking.client(tracking_uri)
    model = str(win["model"])
    exp_id = tracking.ensure_experiment(model, mlflow_client=c)
    key = _drift_key(dag_run_id)
    flt = " and ".join(f"tags.`{k}` = {tracking.quote(v)}" for k, v in key.items())
    found = c.search_runs([exp_id], filter_string=flt, max_results=1)
    data = json.loads(report.read_text())
    verdict = data.get("verdict") or {}
    status = str(verdict.get("status", "unknown"))
    failed = [str(m) for m in verdict.get("drifted") or []]
    tags = {**key, tracking.TAG_MODEL: model, tracking.TAG_VERSION: str(win["champion_version"]),
            TAG_DRIFTED: str(status == "drift").lower(), "tollgate.drift.status": status,
            "tollgate.drift.failed_gates": ", ".join(failed) or "-",
            "tollgate.drift.reference": f"{win['reference_start']}/{win['reference_end']}",
            "tollgate.drift.current": f"{win['current_start']}/{win['current_end']}",
            "mlflow.runName": f"drift {model}:{win['champion_version']} {win['current_end']}"}
    parent = win.get("evidence_run_id")
    if parent and _in_experiment(c, str(parent), exp_id):
        tags["mlflow.parentRunId"] = str(parent)
    run_id = found[0].info.run_id if found else c.create_run(exp_id, tags=tags).info.run_id
    for k, v in tags.items():
        c.set_tag(run_id, k, v)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    metrics = [Metric(k, v, now_ms, 0) for k, v in flat_metrics(data.get("metrics") or data).items()]
    for i in range(0, len(metrics), 900):  # MLflow takes at most 1000 entities per batch
        c.log_batch(run_id, metrics=metrics[i:i + 900])
    c.log_artifact(run_id, str(report))
    for path in extra:
        if path.is_file():
            c.log_artifact(run_id, str(path))
    for plot in plots:
        c.log_artifact(run_id, str(plot), artifact_path=tracking.PLOTS_DIR)
    c.set_terminated(run_id, status="FINISHED")
    return run_id


def _in_experiment(c: Any, run_id: str, exp_id: str) -> bool:
    try:
        return str(c.get_run(run_id).info.experiment_id) == str(exp_id)
    except Exception:  # noqa: BLE001 - a deleted or foreign run: log without a parent
        return False


def last_trigger(model: str, *, tracking_uri: str | None = None) -> tuple[str, datetime, str] | None:
    """(retrain run id, when, drift run id) of the model's newest retrain trigger, from the ledger."""
    from tollgate.mlflow import tracking

    c = tracking.client(tracking_uri)
    exp = c.get_experiment_by_name(tracking.experiment_name(model))
    if exp is None:
        return None
    flt = f"tags.`{tracking.TAG_KIND}` = '{KIND_DRIFT}' and tags.`{TAG_TRIGGERED_UTC}` LIKE '%'"
    runs = c.search_runs([exp.experiment_id], filter_string=flt, max_results=200)
    stamped = [(utc(r.data.tags[TAG_TRIGGERED_UTC]), r) for r in runs if r.data.tags.get(TAG_TRIGGER_RUN)]
    if not stamped:
        return None
    when, run = max(stamped, key=lambda x: x[0])
    return run.data.tags[TAG_TRIGGER_RUN], when, run.info.run_id


def record_trigger(drift_run_id: str, retrain_run: str, now: datetime, *, tracking_uri: str | None = None) -> None:
    """Stamp the drift run with the retrain it triggers (written before the trigger: at most once)."""
    from tollgate.mlflow import tracking

    c = tracking.client(tracking_uri)
    c.set_tag(drift_run_id, TAG_TRIGGER_RUN, retrain_run)
    c.set_tag(drift_run_id, TAG_TRIGGERED_UTC, iso(now))


# -- retrain: plan and register ------------------------------------------------------------------


def next_version(model: str, *, tracking_uri: str | None = None) -> str:
    """The number MLflow gives the model's next version (the highest so far + 1)."""
    from tollgate.mlflow import registry, tracking

    versions = registry._versions(tracking.client(tracking_uri), model)
    return str(max((int(mv.version) for mv in versions), default=0) + 1)


def plan_retrain(model: str, now: datetime, *, window_hours: float, bucket: str, log_source: str,
                 tracking_uri: str | None = None) -> dict[str, Any]:
    """What a retrain trains from (the champion, the last ``window_hours`` of traffic) and where
    the challenger goes (the next version's S3 prefix, the number the registry will give it)."""
    from tollgate.mlflow import registry

    champion = registry.get_alias(model, registry.CHAMPION, tracking_uri=tracking_uri)
    if champion is None:
        raise TollgateError(f"{model} has no champion to fine-tune")
    cfg = registry.serving_config(model, champion, tracking_uri=tracking_uri)
    version = next_version(model, tracking_uri=tracking_uri)
    end = utc(now)
    return {"model_name": model, "parent_version": champion, "parent_source": cfg.source,
            "model_version": version, "dest": f"s3://{bucket}/models/{model}/{version}", "logs": log_source,
            "start": iso(end - timedelta(hours=window_hours)), "end": iso(end),
            "datasets": f"s3://{bucket}/datasets/{model}"}


def _manifest_sha(dest: str) -> str:
    """sha256 of the published MANIFEST.json (what the registry pins the version to)."""
    from evals.weights.manifest import MANIFEST_NAME, sha256_bytes
    from evals.weights.s3 import parse_model_url, s3_client

    loc = parse_model_url(dest, "dest")
    body = s3_client(max_pool_connections=2).get_object(Bucket=loc.bucket, Key=loc.key(MANIFEST_NAME))["Body"].read()
    return str(sha256_bytes(body))


def log_training_run(plan: Mapping[str, Any], *, dag_run_id: str, train_results: Path, dataset: Path,
                     drift_run_id: str | None, tracking_uri: str | None = None) -> str:
    """The training run (params, loss curve as step metrics and artifact, the dataset record); retry-safe."""
    from mlflow.entities import Metric

    from tollgate.mlflow import tracking

    c = tracking.client(tracking_uri)
    model = str(plan["model_name"])
    exp_id = tracking.ensure_experiment(model, mlflow_client=c)
    key = {tracking.TAG_KIND: KIND_TRAIN, tracking.TAG_DAG_ID: RETRAIN_DAG_ID, tracking.TAG_DAG_RUN_ID: dag_run_id}
    flt = " and ".join(f"tags.`{k}` = {tracking.quote(v)}" for k, v in key.items())
    found = c.search_runs([exp_id], filter_string=flt, max_results=1)
    if found and found[0].info.status == "FINISHED":
        return str(found[0].info.run_id)
    results = json.loads(train_results.read_text())
    data = json.loads(dataset.read_text())
    tags = {**key, tracking.TAG_MODEL: model, tracking.TAG_VERSION: str(plan["model_version"]),
            tracking.TAG_DATASET_SHA: data["sha256"], f"{LINEAGE}parent_version": str(plan["parent_version"]),
            f"{LINEAGE}drift_run_id": drift_run_id or "-",
            "mlflow.runName": f"retrain {model}:{plan['model_version']} from {plan['parent_version']}"}
    run_id = found[0].info.run_id if found else c.create_run(exp_id, tags=tags).info.run_id
    params = {**(results.get("params") or {}), "dataset_version": data["version"], "dataset_sha256": data["sha256"],
              "train_examples": data["train_examples"], "eval_examples": data["eval_examples"],
              "window": f"{data['window']['start']}/{data['window']['end']}"}
    tracking._log_params(c, run_id, params)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    curve = [Metric("train_loss", float(p["loss"]), now_ms, int(p["step"])) for p in results.get("loss_curve", [])]
    summary = [Metric(k, float(v), now_ms, 0) for k, v in (results.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    batch = curve + summary
    for i in range(0, len(batch), 900):
        c.log_batch(run_id, metrics=batch[i:i + 900])
    c.log_dict(run_id, {"loss_curve": results.get("loss_curve", [])}, "loss_curve.json")
    c.log_artifact(run_id, str(train_results))
    c.log_artifact(run_id, str(dataset))
    c.set_terminated(run_id, status="FINISHED")
    return str(run_id)


def lineage_tags(plan: Mapping[str, Any], dataset: Mapping[str, Any], *, train_run_id: str,
                 drift_run_id: str | None, dag_run_id: str) -> dict[str, str]:
    """The tags that say where a retrained version came from (pure)."""
    return {f"{LINEAGE}parent_version": str(plan["parent_version"]),
            f"{LINEAGE}dataset_sha256": str(dataset["sha256"]),
            f"{LINEAGE}dataset_version": str(dataset["version"]),
            f"{LINEAGE}dataset_uri": str(dataset.get("published") or "-"),
            f"{LINEAGE}drift_run_id": drift_run_id or "-",
            f"{LINEAGE}train_run_id": train_run_id,
            f"{LINEAGE}retrain_dag_run": dag_run_id}


def register_challenger(plan: Mapping[str, Any], *, dag_run_id: str, train_results: Path, dataset: Path,
                        drift_run_id: str | None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Register the published challenger with its lineage; the parent's prompt and parameters stay.

    The S3 prefix is named after the version number the registry was expected to give; if
    another registration took that number meanwhile, this fails instead of registering
    weights under a prefix that names another version.
    """
    from tollgate.mlflow import registry

    model, expected = str(plan["model_name"]), str(plan["model_version"])
    data = json.loads(dataset.read_text())
    train_run = log_training_run(plan, dag_run_id=dag_run_id, train_results=train_results, dataset=dataset,
                                 drift_run_id=drift_run_id, tracking_uri=tracking_uri)
    parent = registry.serving_config(model, str(plan["parent_version"]), tracking_uri=tracking_uri)
    tags = lineage_tags(plan, data, train_run_id=train_run, drift_run_id=drift_run_id, dag_run_id=dag_run_id)
    mv = registry.register_model_version(
        model, str(plan["dest"]), _manifest_sha(str(plan["dest"])), prompt=parent.prompt,
        generation_params=parent.generation_params or None, run_id=train_run, tags=tags,
        description=f"LoRA fine-tune of version {plan['parent_version']} on {data['train_examples']} examples "
                    f"of production traffic ({data['version']})", tracking_uri=tracking_uri)
    if str(mv.version) != expected:
        raise RegistryError(f"{model}: the challenger was registered as version {mv.version}, but its weights were "
                            f"published for version {expected}; another registration ran meanwhile")
    log.info("registered %s:%s (parent %s, dataset %s, training run %s)", model, mv.version,
             plan["parent_version"], data["sha256"][:12], train_run)
    return {"model_name": model, "model_version": str(mv.version), "train_run_id": train_run, "lineage": tags}
