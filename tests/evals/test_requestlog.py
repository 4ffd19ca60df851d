"""evals.requestlog: the schema, the key layout, local and S3 round trips, window reads."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from evals import requestlog
from evals.errors import BadInput

T0 = datetime(2026, 3, 4, 10, 59, 58, tzinfo=UTC)


def _req(i: int, ts: datetime, model: str = "smollm2-orders", **kw: object) -> dict[str, object]:
    return {"kind": "request", "ts": ts, "request_id": f"r{i}", "model": model, "model_version": "1",
            "arm": "stable", "endpoint": "/v1/chat/completions", "stream": True, "status": 200,
            "prompt_tokens": 5, "output_tokens": 7, "ttft_s": 0.01, "duration_s": 0.2,
            "prompt_text": "hi", "output_text": "hello", "redacted": True, "guardrail_hits": ["pii"], **kw}


def test_schema_has_the_contract_columns_in_order() -> None:
    assert requestlog.COLUMNS == (
        "kind", "ts", "request_id", "user_hash", "model", "model_version", "arm", "endpoint", "stream", "status",
        "error_type", "prompt_tokens", "output_tokens", "ttft_s", "duration_s", "prompt_text", "output_text",
        "redacted", "guardrail_hits", "refusal", "fallback", "finish_reason", "language", "topic",
        "feedback_score", "feedback_label", "reference")
    assert str(requestlog.SCHEMA.field("ts").type) == "timestamp[us, tz=UTC]"
    assert str(requestlog.SCHEMA.field("status").type) == "int32"
    assert str(requestlog.SCHEMA.field("guardrail_hits").type) == "list<item: string>"


def test_key_layout() -> None:
    key = requestlog.relative_key("smollm2-orders:1", T0, token="abc")
    assert key == "request-logs/smollm2-orders_1/dt=2026-03-04/hour=10/20260304T105958000000Z-abc.parquet"
    assert re.fullmatch(r"request-logs/m/dt=2026-03-04/hour=10/\d{8}T\d{12}Z-[0-9a-f]{32}\.parquet",
                        requestlog.relative_key("m", T0))


def test_local_round_trip_splits_by_hour_and_model(tmp_path) -> None:
    rows = [_req(1, T0), _req(2, T0 + timedelta(seconds=3)), _req(3, T0, model="other"),
            {"kind": "feedback", "ts": T0 + timedelta(seconds=5), "request_id": "r1", "model": "smollm2-orders",
             "feedback_score": 0.9, "reference": "hello there"}]
    written = requestlog.write_table(rows, tmp_path)
    assert len(written) == 3  # (model, 10h), (model, 11h), (other, 10h)
    assert all("/dt=2026-03-04/hour=" in w for w in written)
    for w in written:
        assert pq.read_schema(w).equals(requestlog.SCHEMA)
    got = requestlog.read_window(tmp_path, T0 - timedelta(minutes=1), T0 + timedelta(minutes=1))
    assert got.num_rows == 4
    assert got.schema.equals(requestlog.SCHEMA)
    only = requestlog.read_window(tmp_path, T0, T0 + timedelta(seconds=1), model="smollm2-orders")
    assert [r["request_id"] for r in requestlog.rows(only)] == ["r1"]
    merged = requestlog.with_feedback(requestlog.read_window(tmp_path, T0, T0 + timedelta(hours=1),
                                                             model="smollm2-orders"))
    assert {r["request_id"]: r["feedback_score"] for r in merged} == {"r1": 0.9, "r2": None}
    assert merged[0]["guardrail_hits"] == ["pii"] and merged[0]["ts"] == T0
    # a single file works as a source too, and the window excludes its end
    one = requestlog.read_window(written[0], T0, T0 + timedelta(seconds=3))
    assert all(r["ts"] < T0 + timedelta(seconds=3) for r in requestlog.rows(one))


def test_partitions_outside_the_window_are_not_read(tmp_path) -> None:
    requestlog.write_table([_req(1, T0)], tmp_path)
    (tmp_path / "request-logs" / "smollm2-orders" / "dt=2026-03-05" / "hour=00").mkdir(parents=True)
    (tmp_path / "request-logs" / "smollm2-orders" / "dt=2026-03-05" / "hour=00" / "x.parquet").write_bytes(b"junk")
    got = requestlog.read_window(tmp_path, T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert got.num_rows == 1
    empty = requestlog.read_window(tmp_path, T0 + timedelta(days=3), T0 + timedelta(days=4))
    assert empty.num_rows == 0 and empty.schema.equals(requestlog.SCHEMA)


@pytest.mark.parametrize(("row", "message"), [
    ({"kind": "nope", "request_id": "x"}, "kind 'nope'"),
    ({"kind": "request"}, "request_id is required"),
    ({"kind": "request", "request_id": "x", "colour": 1}, "unknown column(s) colour"),
    ({"kind": "request", "request_id": "x", "status": "ok"}, "column status"),
    ({"kind": "request", "request_id": "x", "ts": "yesterday"}, "ts 'yesterday'"),
])
def test_bad_rows_are_bad_input_naming_the_field(row, message, tmp_path) -> None:
    with pytest.raises(BadInput, match=re.escape(message)):
        requestlog.write_table([row], tmp_path)
    assert not any(tmp_path.iterdir())


def test_bad_sources() -> None:
    with pytest.raises(BadInput, match="no bucket"):
        requestlog.read_window("s3:///x", T0, T0 + timedelta(hours=1))
    with pytest.raises(BadInput, match="neither"):
        requestlog.read_window("http://x/y", T0, T0 + timedelta(hours=1))
    with pytest.raises(BadInput, match="not after start"):
        requestlog.read_window("/tmp", T0, T0)


@pytest.mark.integration
def test_s3_round_trip(s3_server, monkeypatch) -> None:
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    dest = f"s3://{s3_server.bucket}/rl-test-{datetime.now(UTC):%H%M%S%f}"
    written = requestlog.write_table([_req(1, T0), _req(2, T0 + timedelta(hours=1))], dest)
    assert len(written) == 2 and all(w.startswith(dest + "/request-logs/smollm2-orders/dt=2026-03-04/")
                                     for w in written)
    got = requestlog.read_window(dest, T0 - timedelta(minutes=5), T0 + timedelta(minutes=5))
    assert [r["request_id"] for r in requestlog.rows(got)] == ["r1"]
    both = requestlog.read_window(dest + "/request-logs/smollm2-orders", T0, T0 + timedelta(hours=2))
    assert both.num_rows == 2
