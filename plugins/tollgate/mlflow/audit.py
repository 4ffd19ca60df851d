"""The alias audit trail: who moved which alias from which version to which, when, why,
on what evidence. MLflow keeps no alias history (mlflow#2169), so we keep it in MLflow.

Storage: one MLflow run per alias move, in the dedicated experiment
``tollgate/alias-audit`` (one for all models, so an auditor has one place to look and the
trail survives deleting a registered model). The record lives in the run's tags
(``tollgate.audit.*``); the run's own status mirrors the record's:

    pending  (run RUNNING)   written before the alias is touched
    applied  (run FINISHED)  the alias now points where the record says
    failed   (run FAILED)    the move was attempted and did not happen
    recorded (run FINISHED)  a decision that moved nothing (approval rejected or timed
                             out, canary rolled back, gate failed): ``action`` names it,
                             ``candidate_version`` the version that did not move in

Why runs and not one JSON-lines artifact or registered-model tags: an append is one
``create_run`` (an INSERT in the tracking store), so concurrent writers can never lose each
other's records the way a read-modify-write of a shared file can; records are searchable
by tag server-side; and nothing grows without bound on the registered model's page.
Records are ordered by ``tollgate.audit.seq`` (UTC nanoseconds at write time), ties broken
by run id.

This module stores and reads records; it decides nothing. Which move is allowed, and what
the alias points to now, is ``tollgate.mlflow.registry``'s business: it hands both in.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tollgate.mlflow.tracking import quote

if TYPE_CHECKING:
    from mlflow import MlflowClient

AUDIT_EXPERIMENT = "tollgate/alias-audit"
PREFIX = "tollgate.audit."
PENDING, APPLIED, FAILED, RECORDED = "pending", "applied", "failed", "recorded"
_RUN_STATUS = {PENDING: "RUNNING", APPLIED: "FINISHED", FAILED: "FAILED", RECORDED: "FINISHED"}
DECISION = re.compile(r"[a-z][a-z0-9_]{0,39}")  # a decision's name as stored in the ``action`` tag
NONE = "-"  # how "no version" (alias unset before, or cleared by a rollback) is written in a tag
_MAX_REASON = 4000


@dataclass(frozen=True)
class AliasAuditRecord:
    """One alias move. ``from_version``/``to_version`` are None when the alias was unset."""

    record_id: str  # the MLflow run id holding the record
    model: str
    alias: str
    from_version: str | None
    to_version: str | None
    actor: str
    reason: str
    evidence_run_id: str | None
    recorded_utc: str
    seq: int
    action: str = "move"  # move | rollback | a decision that moved nothing (rejected, timed_out, ...)
    status: str = PENDING
    rolls_back: str | None = None  # record_id of the move a rollback undid
    dag_id: str | None = None
    dag_run_id: str | None = None
    candidate_version: str | None = None  # the version the promotion was about

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def applied(self) -> bool:
        return self.status == APPLIED


def utc_iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def _v(value: str | None) -> str:
    return NONE if value is None else str(value)


def _unv(value: str | None) -> str | None:
    return None if value in (None, "", NONE) else value


def record_tags(rec: AliasAuditRecord) -> dict[str, str]:
    tags = {
        "model": rec.model, "alias": rec.alias, "from_version": _v(rec.from_version),
        "to_version": _v(rec.to_version), "actor": rec.actor, "reason": rec.reason[:_MAX_REASON],
        "evidence_run_id": _v(rec.evidence_run_id), "recorded_utc": rec.recorded_utc,
        "seq": f"{rec.seq:020d}", "action": rec.action, "status": rec.status,
        "rolls_back": _v(rec.rolls_back), "dag_id": _v(rec.dag_id), "dag_run_id": _v(rec.dag_run_id),
        "candidate_version": _v(rec.candidate_version),
    }
    return {PREFIX + k: v for k, v in tags.items()}


def record_from_tags(record_id: str, tags: dict[str, str]) -> AliasAuditRecord:
    t = {k[len(PREFIX):]: v for k, v in tags.items() if k.startswith(PREFIX)}
    return AliasAuditRecord(
        record_id=record_id, model=t["model"], alias=t["alias"], from_version=_unv(t.get("from_version")),
        to_version=_unv(t.get("to_version")), actor=t.get("actor", ""), reason=t.get("reason", ""),
        evidence_run_id=_unv(t.get("evidence_run_id")), recorded_utc=t.get("recorded_utc", ""),
        seq=int(t.get("seq", "0")), action=t.get("action", "move"), status=t.get("status", PENDING),
        rolls_back=_unv(t.get("rolls_back")), dag_id=_unv(t.get("dag_id")), dag_run_id=_unv(t.get("dag_run_id")),
        candidate_version=_unv(t.get("candidate_version")),
    )


def sort_records(records: Iterable[AliasAuditRecord]) -> list[AliasAuditRecord]:
    return sorted(records, key=lambda r: (r.seq, r.record_id))


def previous_target(records: Iterable[AliasAuditRecord], alias: str, current: str | None) -> AliasAuditRecord | None:
    """The applied move that put ``alias`` where it is now, or None: what a rollback undoes.

    Only the newest applied record counts: if it does not end where the alias is now, the
    alias was moved outside Tollgate and there is nothing trustworthy to restore.
    """
    applied = [r for r in sort_records(records) if r.alias == alias and r.applied]
    if not applied or applied[-1].to_version != current:
        return None
    return applied[-1]


def format_alias_history(records: Iterable[AliasAuditRecord]) -> str:
    """A markdown table of audit records, oldest first (for the README, reports, approvals)."""
    lines = ["| when (UTC) | model | alias | from | to | candidate | by | why | evidence run | action | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sort_records(records):
        why = " ".join(r.reason.split()).replace("|", "\\|")
        lines.append(f"| {r.recorded_utc} | {r.model} | {r.alias} | {_v(r.from_version)} | {_v(r.to_version)} "
                     f"| {_v(r.candidate_version)} | {r.actor} | {why} | {_v(r.evidence_run_id)} | {r.action} "
                     f"| {r.status} |")
    return "\n".join(lines)


# -- the MLflow adapter ----------------------------------------------------------------


_EXPERIMENT_IDS: dict[str, str] = {}  # tracking URI -> id of the audit experiment (ids never change)


def audit_experiment_id(c: MlflowClient, *, create: bool = True) -> str | None:
    """The audit experiment's id, created on first use unless ``create`` is False."""
    from mlflow.exceptions import MlflowException

    key = c.tracking_uri
    if key in _EXPERIMENT_IDS:
        return _EXPERIMENT_IDS[key]
    exp = c.get_experiment_by_name(AUDIT_EXPERIMENT)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        exp_id = exp.experiment_id
    elif not create:
        return None
    else:
        try:
            exp_id = c.create_experiment(AUDIT_EXPERIMENT, tags={"tollgate.kind": "alias_audit"})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            again = c.get_experiment_by_name(AUDIT_EXPERIMENT)  # another writer created it just now
            assert again is not None
            exp_id = again.experiment_id
    _EXPERIMENT_IDS[key] = exp_id
    return exp_id


def write_pending(
    c: MlflowClient,
    *,
    model: str,
    alias: str,
    from_version: str | None,
    to_version: str | None,
    actor: str,
    reason: str,
    evidence_run_id: str | None,
    action: str = "move",
    rolls_back: str | None = None,
    dag_id: str | None = None,
    dag_run_id: str | None = None,
    candidate_version: str | None = None,
    status: str = PENDING,
) -> AliasAuditRecord:
    """Write the record (status pending) before the alias is touched; one INSERT, never lost."""
    seq = time.time_ns()
    draft = AliasAuditRecord(
        record_id="", model=model, alias=alias, from_version=from_version, to_version=to_version, actor=actor,
        reason=reason, evidence_run_id=evidence_run_id, recorded_utc=utc_iso(seq), seq=seq, action=action,
        status=status, rolls_back=rolls_back, dag_id=dag_id, dag_run_id=dag_run_id,
        candidate_version=candidate_version if candidate_version is not None else to_version,
    )
    name = (f"{model} {alias}: {_v(from_version)} -> {_v(to_version)}" if action in ("move", "rollback")
            else f"{model} {alias}: {action} {_v(draft.candidate_version)}")
    tags = {**record_tags(draft), "tollgate.kind": "alias_audit", "mlflow.runName": name}
    try:
        run = c.create_run(str(audit_experiment_id(c)), run_name=name, tags=tags)
    except Exception:  # noqa: BLE001 - a stale cached id (experiment deleted meanwhile): look it up again
        _EXPERIMENT_IDS.pop(c.tracking_uri, None)
        run = c.create_run(str(audit_experiment_id(c)), run_name=name, tags=tags)
    return AliasAuditRecord(**{**draft.to_dict(), "record_id": run.info.run_id})


def write_decision(
    c: MlflowClient,
    *,
    model: str,
    alias: str,
    current: str | None,
    candidate_version: str | int,
    decision: str,
    actor: str,
    reason: str,
    evidence_run_id: str | None = None,
    dag_id: str | None = None,
    dag_run_id: str | None = None,
) -> AliasAuditRecord:
    """Store a promotion decision that moved nothing (``decision``: rejected, timed_out,
    rolled_back, gate_failed, ...): from and to are ``current``, where the alias points
    now; the version that stayed out is ``candidate_version``. Rollbacks never undo such
    a record. The caller has validated the decision (``tollgate.mlflow.registry.record_decision``).
    """
    record = write_pending(c, model=model, alias=alias, from_version=current, to_version=current, actor=actor,
                           reason=reason, evidence_run_id=evidence_run_id, action=decision, dag_id=dag_id,
                           dag_run_id=dag_run_id, candidate_version=str(candidate_version), status=RECORDED)
    c.set_terminated(record.record_id, status=_RUN_STATUS[RECORDED])
    return record


def set_status(c: MlflowClient, record: AliasAuditRecord, status: str) -> AliasAuditRecord:
    c.set_tag(record.record_id, PREFIX + "status", status)
    c.set_terminated(record.record_id, status=_RUN_STATUS[status])
    return AliasAuditRecord(**{**record.to_dict(), "status": status})


def list_records(c: MlflowClient, model: str, alias: str | None = None) -> list[AliasAuditRecord]:
    """Every audit record of a model (optionally one alias), oldest first."""
    exp_id = audit_experiment_id(c, create=False)
    if exp_id is None:
        return []
    flt = f"tags.`{PREFIX}model` = {quote(model)}"
    if alias is not None:
        flt += f" and tags.`{PREFIX}alias` = {quote(alias)}"
    records: list[AliasAuditRecord] = []
    token = None
    while True:
        page = c.search_runs([exp_id], filter_string=flt, max_results=1000, page_token=token)
        records.extend(record_from_tags(r.info.run_id, r.data.tags) for r in page)
        token = page.token
        if not token:
            break
    return sort_records(records)
