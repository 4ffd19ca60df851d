"""The gateway's Prometheus metrics: the names our users scrape (DESIGN.md), correct across workers.

prometheus-client runs in multiprocess mode: the supervisor sets ``PROMETHEUS_MULTIPROC_DIR``
(a fresh folder under the gateway's state folder) *before* this module is imported, every
process (workers and the supervisor) writes its own memory-mapped files there, and any
worker's ``/metrics`` merges all of them. ``llm_requests_in_flight`` is a live sum over the
workers alive; ``llm_queue_depth`` is written by the supervisor only (most recent value).

Labels: ``model``, ``version``, ``arm`` on every ``llm_*`` series (``version``/``arm`` are
``none`` for requests refused before routing). ``llm_errors_total{type}`` counts the
gateway's and the upstreams' failures only (``upstream_connect``, ``upstream_timeout``,
``upstream_reset``, ``upstream_5xx``, ``internal``); requests refused for the client's own
fault are in ``llm_requests_total{status="4xx"}``, so the error-rate alert sees our faults.
``llm_request_cost_dollars`` is a histogram of per-request cost (its ``_sum`` is spend).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as mp

LABELS = ("model", "version", "arm")
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
COST_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0)
QUALITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

REQUESTS = Counter("llm_requests", "Requests answered, by HTTP status", (*LABELS, "status"))
IN_FLIGHT = Gauge("llm_requests_in_flight", "Requests being served now", LABELS, multiprocess_mode="livesum")
DURATION = Histogram("llm_request_duration_seconds", "Request arrival to last byte", LABELS,
                     buckets=DURATION_BUCKETS)
TTFT = Histogram("llm_time_to_first_token_seconds", "Request arrival to the first token sent", LABELS,
                 buckets=TTFT_BUCKETS)
TOKENS = Counter("llm_tokens", "Tokens by direction (input = prompt, output = generated)", (*LABELS, "direction"))
GENERATED = Counter("llm_tokens_generated", "Tokens generated", LABELS)
ERRORS = Counter("llm_errors", "Gateway and upstream failures, by type", (*LABELS, "type"))
QUEUE = Gauge("llm_queue_depth", "Requests waiting in the upstream (vLLM's vllm:num_requests_waiting)", LABELS,
              multiprocess_mode="mostrecent")
COST = Histogram("llm_request_cost_dollars", "Cost of one request in USD (price table of the config)", LABELS,
                 buckets=COST_BUCKETS)
GUARDRAIL = Counter("llm_guardrail_violations", "Outputs breaking a safety-policy rule", (*LABELS, "rule"))
QUALITY = Histogram("llm_quality_score", "Feedback scores 0-1 (POST /v1/feedback)", LABELS, buckets=QUALITY_BUCKETS)
FALLBACK = Counter("llm_fallback", "Canary requests answered by stable after the canary failed before its first "
                   "byte", LABELS)
LOG_RECORDS = Counter("tollgate_gateway_request_log_records", "Request-log records by state (spooled locally, "
                      "uploaded to the store)", ("state",))
LOG_SPOOL_FILES = Gauge("tollgate_gateway_request_log_spool_files", "Parquet files waiting in the local spool",
                        multiprocess_mode="mostrecent")
LOG_UPLOAD_ERRORS = Counter("tollgate_gateway_request_log_upload_errors", "Failed uploads of spooled files "
                            "(retried until the store answers)")
ROUTING_GENERATION = Gauge("tollgate_gateway_routing_generation", "Generation of the routing state in force",
                           multiprocess_mode="mostrecent")
CANARY_WEIGHT = Gauge("tollgate_gateway_canary_weight", "Canary weight in force (0-100)", ("model",),
                      multiprocess_mode="mostrecent")


class ArmMetrics:
    """The label children of one (model, version, arm), resolved once (``labels()`` is slow on the hot path)."""

    __slots__ = ("key", "in_flight", "duration", "ttft", "tok_in", "tok_out", "generated", "cost", "quality",
                 "fallback", "_status", "_errors", "_rules")

    def __init__(self, model: str, version: str, arm: str) -> None:
        self.key = (model, version, arm)
        self.in_flight = IN_FLIGHT.labels(*self.key)
        self.duration = DURATION.labels(*self.key)
        self.ttft = TTFT.labels(*self.key)
        self.tok_in = TOKENS.labels(*self.key, "input")
        self.tok_out = TOKENS.labels(*self.key, "output")
        self.generated = GENERATED.labels(*self.key)
        self.cost = COST.labels(*self.key)
        self.quality = QUALITY.labels(*self.key)
        self.fallback = FALLBACK.labels(*self.key)
        self._status: dict[int, Any] = {}
        self._errors: dict[str, Any] = {}
        self._rules: dict[str, Any] = {}

    def status(self, code: int) -> Any:
        child = self._status.get(code)
        if child is None:
            child = self._status[code] = REQUESTS.labels(*self.key, str(code))
        return child

    def error(self, kind: str) -> Any:
        child = self._errors.get(kind)
        if child is None:
            child = self._errors[kind] = ERRORS.labels(*self.key, kind)
        return child

    def rule(self, rule: str) -> Any:
        child = self._rules.get(rule)
        if child is None:
            child = self._rules[rule] = GUARDRAIL.labels(*self.key, rule)
        return child


_CACHE: dict[tuple[str, str, str], ArmMetrics] = {}


def arm_metrics(model: str, version: str, arm: str) -> ArmMetrics:
    key = (model, version, arm)
    m = _CACHE.get(key)
    if m is None:
        m = _CACHE[key] = ArmMetrics(model, version, arm)
    return m


# What an arm's series are born with, at 0, before its first request (see :func:`announce`).
ZERO_STATUSES = (200, 500, 502, 503, 504)
ZERO_ERRORS = ("upstream_connect", "upstream_timeout", "upstream_reset", "upstream_protocol", "upstream_5xx")


def announce(model: str, state: Any) -> None:
    """Create every arm's series at 0 as soon as the routing state names the slot (the controller, on publish).

    Prometheus' ``increase()`` cannot see the increment that creates a series (its first
    sample is already 1), so a canary's first request, first error and first fallback were
    invisible to the analysis: at 5 % of a trickle that is a third of its evidence.
    """
    for arm in ("stable", "canary"):
        slot = state.canary if arm == "canary" else state.stable
        if slot is None:
            continue
        am = arm_metrics(model, slot.version, arm)
        for code in ZERO_STATUSES:
            am.status(code)
        for kind in ZERO_ERRORS:
            am.error(kind)


def exposition() -> bytes:
    """Every process's metrics merged (multiprocess mode), in the text format."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import REGISTRY

        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    mp.MultiProcessCollector(registry)
    return generate_latest(registry)


def mark_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        mp.mark_process_dead(pid)
