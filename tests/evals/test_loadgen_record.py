"""SSE decoding and per-request timings of RequestRecord (pure, no sockets)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evals.loadgen import ERROR, OK, RequestRecord


def _sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chat_stream(n: int, usage: int | None = None, done: bool = True) -> bytes:
    out = _sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    for i in range(n):
        out += _sse({"choices": [{"index": 0, "delta": {"content": f"t{i}"},
                                  "finish_reason": "length" if i == n - 1 else None}]})
    if usage is not None:
        out += _sse({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": usage}})
    if done:
        out += b"data: [DONE]\n\n"
    return out


def test_token_chunks_are_stamped_with_their_arrival_time_and_role_chunk_is_not_a_token():
    rec = RequestRecord(0, scheduled_at=0.0)
    rec.sent_at = 1.0
    events = chat_stream(3, usage=3).split(b"\n\n")[:-1]
    times = [1.01, 1.10, 1.20, 1.30, 1.31, 1.32]  # role, t0, t1, t2, usage, DONE
    for ev, t in zip(events, times, strict=True):
        rec.feed(ev + b"\n\n", t)
    rec.complete(1.32)
    assert rec.status == OK
    assert rec.ttft_s == pytest.approx(0.10)
    assert rec.token_times == [1.10, 1.20, 1.30]
    assert rec.itl_s() == pytest.approx([0.10, 0.10])
    assert rec.e2e_s == pytest.approx(0.32)
    # TPOT = (E2E - TTFT) / (output_tokens - 1)
    assert rec.tpot_s == pytest.approx((0.32 - 0.10) / 2)
    assert rec.prompt_tokens == 5


def test_usage_block_overrides_chunk_count():
    rec = RequestRecord(0, 0.0)
    rec.sent_at = 0.0
    rec.feed(chat_stream(2, usage=7), 0.5)
    rec.complete(0.5)
    assert rec.ok and rec.output_tokens == 7 and len(rec.token_times) == 2


def test_without_usage_tokens_are_counted_from_chunks():
    rec = RequestRecord(0, 0.0)
    rec.feed(chat_stream(4, usage=None), 0.5)
    rec.complete(0.5)
    assert rec.ok and rec.output_tokens == 4


def test_single_token_has_no_tpot():
    rec = RequestRecord(0, 0.0)
    rec.feed(chat_stream(1, usage=1), 0.5)
    rec.complete(0.6)
    assert rec.ok and rec.tpot_s is None and rec.ttft_s == pytest.approx(0.5)


def test_completions_api_text_chunks():
    rec = RequestRecord(0, 0.0)
    body = _sse({"choices": [{"index": 0, "text": "a"}]}) + _sse({"choices": [{"index": 0, "text": "b"}]})
    rec.feed(body + b"data: [DONE]\n\n", 0.2)
    rec.complete(0.2)
    assert rec.ok and rec.output_tokens == 2


@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40), crlf=st.booleans())
def test_any_split_of_the_byte_stream_decodes_the_same(cuts, crlf):
    data = chat_stream(5, usage=5)
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    rec = RequestRecord(0, 0.0)
    for i, piece in enumerate(pieces):
        rec.feed(piece, float(i))
    rec.complete(float(len(pieces)))
    assert rec.status == OK, rec.reason
    assert rec.output_tokens == 5 and len(rec.token_times) == 5
    assert rec.token_times == sorted(rec.token_times)


def test_comments_and_other_fields_are_ignored():
    rec = RequestRecord(0, 0.0)
    rec.feed(b": ping\n\nevent: message\nid: 1\n" + chat_stream(2, usage=2), 0.1)
    rec.complete(0.1)
    assert rec.ok and rec.output_tokens == 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (chat_stream(2, usage=2, done=False), "stream ended without [DONE]"),
        (_sse({"choices": [{"delta": {"content": "x"}}]}) + b"data: {oops\n\n" + b"data: [DONE]\n\n",
         "malformed SSE event (not JSON)"),
        (b"data: [1, 2]\n\ndata: [DONE]\n\n", "malformed SSE event (not an object)"),
        (_sse({"error": {"message": "out of KV cache", "code": 500}}) + b"data: [DONE]\n\n",
         "server error in stream: out of KV cache"),
        (b"data: [DONE]\n\n", "stream had no tokens"),
    ],
)
def test_broken_streams_are_errors_with_a_reason(body, reason):
    rec = RequestRecord(0, 0.0)
    rec.feed(body, 0.1)
    rec.complete(0.2)
    assert rec.status == ERROR
    assert rec.reason == reason


def test_first_failure_wins():
    rec = RequestRecord(0, 0.0)
    rec.feed(b"data: {bad\n\n", 0.1)
    rec.fail("timeout", "timeout before first token")
    assert rec.status == ERROR and rec.reason.startswith("malformed")


def test_queue_time_is_scheduled_to_sent_and_never_negative():
    rec = RequestRecord(0, scheduled_at=10.0)
    rec.sent_at = 10.25
    assert rec.queue_s == pytest.approx(0.25)
    rec.sent_at = 9.9  # dispatched a hair early by the timer
    assert rec.queue_s == 0.0


def test_sample_row_is_in_milliseconds_relative_to_run_start():
    rec = RequestRecord(3, scheduled_at=100.5, warmup=True)
    rec.sent_at = 100.5
    rec.feed(chat_stream(3, usage=3), 100.6)
    rec.complete(100.7)
    row = rec.as_sample(t0=100.0)
    assert row["id"] == 3 and row["warmup"] is True
    assert row["scheduled_ms"] == pytest.approx(500.0)
    assert row["ttft_ms"] == pytest.approx(100.0)
    assert row["e2e_ms"] == pytest.approx(200.0)
    assert row["tpot_ms"] == pytest.approx(50.0)
    assert row["status"] == "ok" and row["error"] is None
