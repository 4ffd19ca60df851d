"""tollgate.mlflow.audit: the storage of alias audit records (pure parts, and what a write stores)."""

from __future__ import annotations

from tollgate.mlflow import audit, tracking


def _rec(seq: int, alias: str, frm: str | None, to: str | None, status: str = audit.APPLIED) -> audit.AliasAuditRecord:
    return audit.AliasAuditRecord(record_id=f"r{seq}", model="m", alias=alias, from_version=frm, to_version=to,
                                  actor="a", reason="r", evidence_run_id=None, recorded_utc=audit.utc_iso(seq),
                                  seq=seq, status=status)


def test_record_tags_round_trip() -> None:
    rec = _rec(5, "champion", None, "2")
    assert audit.record_from_tags("r5", audit.record_tags(rec)) == rec
    assert all(len(v) <= 8000 for v in audit.record_tags(rec).values())


def test_previous_target_uses_only_the_newest_applied_move() -> None:
    recs = [_rec(1, "champion", None, "1"), _rec(2, "champion", "1", "2"), _rec(3, "champion", "2", "3", audit.FAILED),
            _rec(4, "staging", None, "3")]
    last = audit.previous_target(list(reversed(recs)), "champion", "2")
    assert last is not None and last.record_id == "r2" and last.from_version == "1"
    assert audit.previous_target(recs, "champion", "3") is None  # moved outside the audited path
    assert audit.previous_target(recs, "challenger", None) is None
    assert audit.format_alias_history([]).count("\n") == 1


def test_a_decision_is_stored_with_the_alias_it_is_handed(uri: str, model: str) -> None:
    """Storage decides nothing and reads no alias: the model need not even be registered."""
    c = tracking.client(uri)
    rec = audit.write_decision(c, model=model, alias="champion", current="7", candidate_version=8, decision="rejected",
                               actor="bob", reason="too slow", evidence_run_id="run-1", dag_id="model_promotion",
                               dag_run_id="manual__1")
    assert (rec.from_version, rec.to_version, rec.candidate_version, rec.action, rec.status) == (
        "7", "7", "8", "rejected", audit.RECORDED)
    assert (rec.dag_id, rec.dag_run_id, rec.evidence_run_id) == ("model_promotion", "manual__1", "run-1")
    assert c.get_run(rec.record_id).info.status == "FINISHED"
    assert audit.list_records(c, model) == [rec]
