"""Metric definitions: percentiles, rates, warm-up exclusion, goodput, requested vs delivered."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evals.loadgen import SLO, ClosedLoop, OpenLoop, RequestRecord, compute_metrics, percentile
from evals.loadgen._runner import RunResult, poisson_arrivals

METRIC_NAMES = [f"{m}_p{q}_ms" for m in ("latency", "ttft", "tpot", "itl") for q in (50, 95, 99)] + [
    "requests_per_second", "output_tokens_per_second", "error_rate", "timeout_rate", "goodput_rps"]


def ok_record(i: int, scheduled: float, ttft: float, e2e: float, tokens: int, warmup: bool = False,
              queue: float = 0.0) -> RequestRecord:
    rec = RequestRecord(i, scheduled, warmup=warmup)
    rec.sent_at = scheduled + queue
    rec.first_token_at = rec.sent_at + ttft
    step = (e2e - ttft) / max(tokens - 1, 1)
    rec.token_times = [rec.first_token_at + k * step for k in range(tokens)]
    rec.usage_output_tokens = tokens
    rec.end_at = rec.sent_at + e2e
    rec.status = "ok"
    return rec


def failed_record(i: int, scheduled: float, status: str, reason: str) -> RequestRecord:
    rec = RequestRecord(i, scheduled)
    rec.sent_at = scheduled
    rec.end_at = scheduled + 0.01
    rec.fail(status, reason)
    return rec


def run_result(records, shape=None, window=(1.0, 11.0), peak=4) -> RunResult:
    return RunResult(records=records, t0=0.0, window_start=window[0], window_end=window[1],
                     drained_at=window[1], connections_opened=4, peak_in_flight=peak,
                     shape=shape or ClosedLoop(4), config=None)  # type: ignore[arg-type]


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=200),
       st.sampled_from([50, 95, 99]))
def test_percentile_is_numpy_linear_and_within_range(values, q):
    p = percentile(values, q)
    assert p == pytest.approx(float(np.percentile(values, q)))
    assert min(values) <= p <= max(values)


def test_percentile_of_nothing_is_nan():
    assert math.isnan(percentile([], 50))


def test_warmup_is_excluded_and_rates_use_the_window():
    recs = [ok_record(0, 0.5, 0.9, 9.0, 10, warmup=True)]  # huge latency, but warm-up
    recs += [ok_record(i, 1.0 + i * 0.5, 0.1, 0.5, 6) for i in range(1, 19)]  # 18 fast ones, end by 10.5
    m = compute_metrics(run_result(recs))
    assert m.warmup_requests == 1 and m.requests_measured == 18 and m.requests_ok == 18
    assert m.elapsed_s == pytest.approx(10.0)
    assert m.requests_per_second == pytest.approx(1.8)
    assert m.output_tokens_per_second == pytest.approx(18 * 6 / 10.0)
    assert m.latency_ms[50] == pytest.approx(500.0)
    assert m.ttft_ms[99] == pytest.approx(100.0)
    assert m.tpot_ms[50] == pytest.approx((500.0 - 100.0) / 5)
    assert m.itl_ms[50] == pytest.approx(80.0)
    out = m.as_metrics()
    assert all(name in out for name in METRIC_NAMES)


def test_drain_past_the_window_stretches_elapsed():
    recs = [ok_record(1, 10.0, 0.1, 5.0, 2)]  # scheduled at 10, ends at 15; window ends at 11
    m = compute_metrics(run_result(recs))
    assert m.elapsed_s == pytest.approx(14.0)
    assert m.requests_per_second == pytest.approx(1 / 14.0)


def test_errors_and_timeouts_are_rates_with_reasons_and_not_in_latency():
    recs = [ok_record(i, 1.0 + i * 0.1, 0.1, 0.2, 3) for i in range(6)]
    recs += [failed_record(10, 2.0, "error", "http 500"), failed_record(11, 2.1, "error", "http 500"),
             failed_record(12, 2.2, "timeout", "timeout before first token"),
             failed_record(13, 2.3, "error", "connection closed by server mid-stream")]
    m = compute_metrics(run_result(recs))
    assert m.requests_measured == 10
    assert m.error_rate == pytest.approx(0.4)  # timeouts are errors too: one gate catches both
    assert m.timeout_rate == pytest.approx(0.1)
    assert m.errors_by_reason == {"http 500": 2, "timeout before first token": 1,
                                  "connection closed by server mid-stream": 1}
    assert m.latency_ms[99] == pytest.approx(200.0)  # failures do not leak into latency


def test_nothing_succeeded_gives_nan_latency_not_zero():
    m = compute_metrics(run_result([failed_record(1, 2.0, "error", "http 500")]))
    assert math.isnan(m.latency_ms[50]) and m.requests_per_second == 0 and m.error_rate == 1.0


def test_goodput_counts_only_requests_meeting_every_slo():
    recs = [ok_record(1, 1.0, 0.1, 0.5, 5),   # meets all
            ok_record(2, 1.1, 0.6, 0.9, 5),   # TTFT too slow
            ok_record(3, 1.2, 0.1, 2.1, 5),   # TPOT 500 ms, E2E too slow
            ok_record(4, 1.3, 0.1, 0.3, 1)]   # one token: TPOT undefined, meets the rest
    slo = SLO(ttft_ms=500, tpot_ms=200, latency_ms=1000)
    m = compute_metrics(run_result(recs), slo)
    assert m.goodput_rps * m.elapsed_s == pytest.approx(2)
    assert compute_metrics(run_result(recs)).goodput_rps * m.elapsed_s == pytest.approx(4)  # no SLO: all ok


def test_open_loop_reports_requested_and_delivered_rate_and_queue():
    # Asked for 10 req/s over 10 s; only 20 were sent in the window, each queued 250 ms in the client.
    recs = [ok_record(i, 1.0 + i * 0.5, 0.1, 0.2, 3, queue=0.25) for i in range(20)]
    m = compute_metrics(run_result(recs, shape=OpenLoop(rate=10.0, max_concurrency=2)))
    assert m.requested_rate_rps == 10.0 and m.requested_concurrency == 2.0
    assert m.delivered_rate_rps == pytest.approx(2.0)
    assert m.client_queue_ms[50] == pytest.approx(250.0)
    assert m.latency_ms[50] == pytest.approx(200.0)  # queue time is not latency


def test_closed_loop_delivered_concurrency_is_busy_time_over_elapsed():
    recs = [ok_record(i, 1.0 + i, 0.1, 1.0, 3) for i in range(10)]  # one user, always busy
    m = compute_metrics(run_result(recs, shape=ClosedLoop(4)))
    assert m.requested_concurrency == 4.0 and m.requested_rate_rps is None
    assert m.delivered_concurrency_mean == pytest.approx(1.0)


def test_poisson_arrivals_are_seeded_ordered_in_window_and_at_the_rate():
    times = list(poisson_arrivals(200.0, seed=3, start=10.0, end=110.0))
    assert times == list(poisson_arrivals(200.0, seed=3, start=10.0, end=110.0))
    assert times != list(poisson_arrivals(200.0, seed=4, start=10.0, end=110.0))
    assert times == sorted(times) and times[0] > 10.0 and times[-1] < 110.0
    assert len(times) == pytest.approx(20_000, rel=0.05)  # 7 sigma of a Poisson count (sd ~141)
    gaps = np.diff(times)
    # Exponential gaps: coefficient of variation 1 (a fixed-interval schedule would give 0).
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.05)
