"""Benchmark metrics: definitions next to the code, percentiles computed in one place.

Which requests count: those *scheduled* inside the measurement window (warm-up
excluded). Latency figures use successful requests only; failures are counted
in ``error_rate`` instead of hiding in a tail. ``error_rate`` is every request
that did not succeed, timeouts included, so one gate on it catches both;
``timeout_rate`` is the part of it that timed out.

Definitions (all per request, milliseconds):

- E2E latency (``latency_*``): request sent -> response complete (``[DONE]``),
  as the caller sees it. Client queue time is *not* included.
- TTFT: request sent -> first SSE chunk that carries generated text.
- TPOT: (E2E - TTFT) / (output_tokens - 1); requests with < 2 tokens have none.
  ``output_tokens`` is the server's ``usage.completion_tokens``, else the
  number of token chunks.
- ITL: gap between consecutive token chunks, pooled over all requests.
- Client queue time: scheduled -> sent. In the open loop this is waiting for a
  ``--max-concurrency`` slot plus event-loop lag; when it grows, delivered load
  falls short of the requested rate. Arrivals still waiting when the window ends
  are not sent; ``requests_unsent`` counts them (they are not errors).

Rates divide by the measured elapsed time: from window start to the end of the
last measured request (at least ``duration``), as vLLM's bench does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from evals.loadgen._record import ERROR, TIMEOUT, RequestRecord
from evals.loadgen._runner import ClosedLoop, RunResult

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks; NaN if empty.

    Every percentile in a results file comes from this function.
    """
    if len(values) == 0:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=float), q))


@dataclass(frozen=True)
class SLO:
    """Per-request service levels for goodput; ``None`` means no bound on that figure."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    latency_ms: float | None = None

    def met_by(self, rec: RequestRecord) -> bool:
        if not rec.ok:
            return False
        if self.latency_ms is not None and rec.e2e_s * 1e3 > self.latency_ms:
            return False
        if self.ttft_ms is not None:
            ttft = rec.ttft_s
            if ttft is None or ttft * 1e3 > self.ttft_ms:
                return False
        if self.tpot_ms is not None:
            tpot = rec.tpot_s
            if tpot is not None and tpot * 1e3 > self.tpot_ms:
                return False
        return True

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.latency_ms))


@dataclass
class BenchmarkMetrics:
    """The numbers of one benchmark run; see the module docstring for definitions."""

    requests_measured: int
    requests_ok: int
    requests_failed: int
    requests_timed_out: int
    warmup_requests: int
    elapsed_s: float
    requests_per_second: float
    output_tokens_per_second: float
    error_rate: float
    timeout_rate: float
    goodput_rps: float
    latency_ms: dict[int, float]
    ttft_ms: dict[int, float]
    tpot_ms: dict[int, float]
    itl_ms: dict[int, float]
    client_queue_ms: dict[int, float]
    latency_mean_ms: float
    ttft_mean_ms: float
    tpot_mean_ms: float
    mean_output_tokens: float
    # Load requested vs delivered.
    requested_rate_rps: float | None
    delivered_rate_rps: float
    requested_concurrency: float | None
    delivered_concurrency_mean: float
    peak_in_flight: int
    connections_opened: int
    stale_connection_retries: int = 0
    requests_unsent: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)

    def as_metrics(self) -> dict[str, float | None]:
        """Flat, numbers-only ``metrics`` object for the results file (names used by thresholds)."""
        out: dict[str, float | None] = {}
        for name, table in (("latency", self.latency_ms), ("ttft", self.ttft_ms), ("tpot", self.tpot_ms),
                            ("itl", self.itl_ms), ("client_queue", self.client_queue_ms)):
            for q in PERCENTILES:
                out[f"{name}_p{q}_ms"] = table[q]
        out.update(
            latency_mean_ms=self.latency_mean_ms,
            ttft_mean_ms=self.ttft_mean_ms,
            tpot_mean_ms=self.tpot_mean_ms,
            requests_per_second=self.requests_per_second,
            output_tokens_per_second=self.output_tokens_per_second,
            error_rate=self.error_rate,
            timeout_rate=self.timeout_rate,
            goodput_rps=self.goodput_rps,
            requests_measured=self.requests_measured,
            requests_ok=self.requests_ok,
            requests_failed=self.requests_failed,
            requests_timed_out=self.requests_timed_out,
            warmup_requests=self.warmup_requests,
            elapsed_s=self.elapsed_s,
            mean_output_tokens=self.mean_output_tokens,
            delivered_rate_rps=self.delivered_rate_rps,
            delivered_concurrency_mean=self.delivered_concurrency_mean,
            peak_in_flight=self.peak_in_flight,
            connections_opened=self.connections_opened,
            stale_connection_retries=self.stale_connection_retries,
            requests_unsent=self.requests_unsent,
        )
        # What was asked for: a rate (open loop) and/or a concurrency; absent when not part of the shape.
        if self.requested_rate_rps is not None:
            out["requested_rate_rps"] = self.requested_rate_rps
        if self.requested_concurrency is not None:
            out["requested_concurrency"] = self.requested_concurrency
        return out

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _table(values: Sequence[float] | np.ndarray) -> dict[int, float]:
    return {q: percentile(values, q) for q in PERCENTILES}


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return float(np.mean(vals)) if vals else math.nan


def compute_metrics(result: RunResult, slo: SLO | None = None) -> BenchmarkMetrics:
    """Reduce a run's records to ``BenchmarkMetrics``."""
    slo = slo or SLO()
    measured = result.measured
    ok = [r for r in measured if r.ok]
    n = len(measured)
    failed = sum(1 for r in measured if r.status == ERROR)
    timed_out = sum(1 for r in measured if r.status == TIMEOUT)
    duration = result.window_end - result.window_start
    last_end = max((r.end_at for r in measured if r.end_at), default=result.window_end)
    elapsed = max(duration, last_end - result.window_start)

    e2e = np.array([r.e2e_s * 1e3 for r in ok])
    ttft = np.array([t * 1e3 for r in ok if (t := r.ttft_s) is not None])
    tpot = np.array([t * 1e3 for r in ok if (t := r.tpot_s) is not None])
    itl = np.array([g * 1e3 for r in ok for g in r.itl_s()])
    queue = np.array([r.queue_s * 1e3 for r in measured if r.sent_at])
    out_tokens = sum(r.output_tokens for r in ok)
    sent_in_window = sum(1 for r in measured if r.sent_at and r.sent_at < result.window_end)
    busy = sum(r.e2e_s for r in measured if r.end_at)

    shape = result.shape
    requested_rate: float | None
    requested_conc: float | None
    if isinstance(shape, ClosedLoop):
        requested_rate, requested_conc = None, float(shape.users)
    else:
        requested_rate = float(shape.rate)
        requested_conc = float(shape.max_concurrency) if shape.max_concurrency else None

    reasons = Counter(r.reason for r in measured if r.status in (ERROR, TIMEOUT))
    return BenchmarkMetrics(
        requests_measured=n,
        requests_ok=len(ok),
        requests_failed=failed,
        requests_timed_out=timed_out,
        warmup_requests=len(result.records) - n,
        elapsed_s=elapsed,
        requests_per_second=len(ok) / elapsed if elapsed > 0 else math.nan,
        output_tokens_per_second=out_tokens / elapsed if elapsed > 0 else math.nan,
        error_rate=(failed + timed_out) / n if n else math.nan,
        timeout_rate=timed_out / n if n else math.nan,
        goodput_rps=sum(1 for r in ok if slo.met_by(r)) / elapsed if elapsed > 0 else math.nan,
        latency_ms=_table(e2e),
        ttft_ms=_table(ttft),
        tpot_ms=_table(tpot),
        itl_ms=_table(itl),
        client_queue_ms=_table(queue),
        latency_mean_ms=_mean(e2e),
        ttft_mean_ms=_mean(ttft),
        tpot_mean_ms=_mean(tpot),
        mean_output_tokens=out_tokens / len(ok) if ok else math.nan,
        requested_rate_rps=requested_rate,
        delivered_rate_rps=sent_in_window / duration if duration > 0 else math.nan,
        requested_concurrency=requested_conc,
        delivered_concurrency_mean=busy / elapsed if elapsed > 0 else math.nan,
        peak_in_flight=result.peak_in_flight,
        connections_opened=result.connections_opened,
        stale_connection_retries=result.stale_connection_retries,
        requests_unsent=result.unsent,
        errors_by_reason=dict(reasons.most_common()),
    )
