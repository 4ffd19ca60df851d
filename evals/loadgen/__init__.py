"""Load generation for `python -m evals.benchmark`: streaming requests, per-token timing, metrics.

    result = run_load(RunConfig(endpoint, payloads, ClosedLoop(8), duration_s=30))
    metrics = compute_metrics(result, SLO(ttft_ms=500))
"""

from evals.loadgen._http import ConnectionPool, Endpoint, TransportError, build_post
from evals.loadgen._metrics import PERCENTILES, SLO, BenchmarkMetrics, compute_metrics, percentile
from evals.loadgen._plot import write_cdf_png
from evals.loadgen._record import ERROR, OK, TIMEOUT, RequestRecord
from evals.loadgen._runner import ClosedLoop, LoadShape, OpenLoop, RunConfig, RunResult, run_load

__all__ = [
    "ERROR", "OK", "PERCENTILES", "SLO", "TIMEOUT", "BenchmarkMetrics", "ClosedLoop", "ConnectionPool",
    "Endpoint", "LoadShape", "OpenLoop", "RequestRecord", "RunConfig", "RunResult", "TransportError",
    "build_post", "compute_metrics", "percentile", "run_load", "write_cdf_png",
]
