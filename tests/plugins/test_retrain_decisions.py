"""The drift monitor's decisions as plain functions: windows from the audit trail, the trigger rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tollgate import retrain
from tollgate.exceptions import TollgateError
from tollgate.mlflow.audit import AliasAuditRecord

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def record(to: str, when: datetime, *, status: str = "applied", action: str = "move", alias: str = "champion",
           seq: int | None = None) -> AliasAuditRecord:
    return AliasAuditRecord(record_id=f"r{to}{seq or 0}", model="m", alias=alias, from_version=None, to_version=to,
                            actor="a", reason="r", evidence_run_id=f"ev{to}", recorded_utc=retrain.iso(when),
                            seq=seq or int(when.timestamp() * 1e9), action=action, status=status)


def test_no_drift_never_triggers() -> None:
    d = retrain.decide(drifted=False, now=NOW, last_triggered=None, open_run=None, cooldown=DAY)
    assert not d.trigger and "no drift" in d.reason


def test_drift_triggers_when_nothing_blocks() -> None:
    assert retrain.decide(drifted=True, now=NOW, last_triggered=None, open_run=None, cooldown=DAY).trigger


def test_an_open_retrain_run_of_the_model_blocks_a_second_trigger() -> None:
    d = retrain.decide(drifted=True, now=NOW, last_triggered=NOW - 3 * DAY, open_run="drift__m__1", cooldown=DAY)
    assert not d.trigger and "drift__m__1" in d.reason


@pytest.mark.parametrize(("ago", "expected"), [(timedelta(hours=1), False), (DAY - timedelta(seconds=1), False),
                                               (DAY, True), (DAY * 2, True)])
def test_at_most_once_per_cooldown(ago: timedelta, expected: bool) -> None:
    d = retrain.decide(drifted=True, now=NOW, last_triggered=NOW - ago, open_run=None, cooldown=DAY)
    assert d.trigger is expected, d.reason
    if not expected:
        assert "cooldown" in d.reason


def test_zero_cooldown_only_dedups() -> None:
    assert retrain.decide(drifted=True, now=NOW, last_triggered=NOW, open_run=None, cooldown=timedelta(0)).trigger


def test_reference_window_starts_at_the_champions_promotion() -> None:
    promoted = NOW - 3 * DAY
    recs = [record("1", NOW - 9 * DAY), record("2", promoted), record("3", NOW - DAY, status="failed"),
            record("2", NOW - 2 * DAY, alias="staging")]
    rec = retrain.promotion_record(recs, "2")
    assert rec is not None and rec.recorded_utc == retrain.iso(promoted)
    win = retrain.windows("m", "2", rec, NOW, window_hours=1, reference_hours=24)
    assert win is not None
    assert (win.reference_start, win.reference_end) == (retrain.iso(promoted), retrain.iso(promoted + DAY))
    assert (win.current_start, win.current_end) == (retrain.iso(NOW - timedelta(hours=1)), retrain.iso(NOW))
    assert win.evidence_run_id == "ev2"


def test_a_champion_younger_than_both_windows_has_nothing_to_compare() -> None:
    rec = record("2", NOW - timedelta(hours=10))
    assert retrain.windows("m", "2", rec, NOW, window_hours=1, reference_hours=24) is None


def test_no_audited_promotion_cannot_decide() -> None:
    with pytest.raises(TollgateError, match="no audited promotion"):
        retrain.windows("m", "2", retrain.promotion_record([record("1", NOW - DAY)], "2"), NOW, window_hours=1,
                        reference_hours=24)


def test_a_missing_verdict_or_a_failed_check_is_not_no_drift() -> None:
    with pytest.raises(TollgateError, match="no drift verdict"):
        retrain.drift_verdict(None)
    with pytest.raises(TollgateError, match="failed its data checks.*below 1000 rows"):
        retrain.drift_verdict({"status": "check_failed", "check_failures": ["current: below 1000 rows"]})
    with pytest.raises(TollgateError, match="status"):
        retrain.drift_verdict({"status": "maybe"})
    assert retrain.drift_verdict({"status": "drift", "drifted": ["prompt_tokens_psi_drift"]}) == (
        True, ["prompt_tokens_psi_drift"])
    assert retrain.drift_verdict({"status": "warn", "drifted": []}) == (False, [])
    assert retrain.drift_verdict({"status": "no_drift"}) == (False, [])


def test_flat_metrics_keeps_every_finite_number() -> None:
    out = retrain.flat_metrics({"features": {"prompt_tokens": {"psi": 0.3, "ks_p": 1e-9, "n": 40, "name": "x"},
                                             "bad": float("nan")}, "drifted": True})
    assert out == {"features.prompt_tokens.psi": 0.3, "features.prompt_tokens.ks_p": 1e-9,
                   "features.prompt_tokens.n": 40.0, "drifted": 1.0}


def test_lineage_tags_name_parent_dataset_drift_and_training() -> None:
    tags = retrain.lineage_tags({"parent_version": "1"}, {"sha256": "ab" * 32, "version": "v"},
                                train_run_id="t", drift_run_id=None, dag_run_id="d")
    assert tags["tollgate.lineage.parent_version"] == "1"
    assert tags["tollgate.lineage.dataset_sha256"] == "ab" * 32
    assert tags["tollgate.lineage.drift_run_id"] == "-" and tags["tollgate.lineage.train_run_id"] == "t"
