"""A small client of Prometheus's HTTP API (``/api/v1/query`` and ``/api/v1/query_range``).

Used by the canary analysis, the demo's final check and the dashboard test. It fails
closed: a Prometheus that is down, slow, answers non-JSON, or says ``"status":
"error"`` raises :class:`PromQLError` (a :class:`~evals.errors.CheckFailed`: a check
that cannot decide fails) with a one-line message naming the URL and the expression;
it never returns an empty result in place of an error. An expression Prometheus
refuses to parse raises :class:`PromQLBadQuery` (bad input).

    from evals import promql
    promql.scalar(url, 'sum(llm_requests_total{model="m"})')   # float, or None when no series
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from evals import settings
from evals.errors import BadInput, CheckFailed

DEFAULT_TIMEOUT_S = 10.0


class PromQLError(CheckFailed):
    """Prometheus could not answer (down, timeout, server error): the caller cannot decide."""


class PromQLBadQuery(BadInput):
    """Prometheus refused the expression (``errorType: bad_data``): a bug in the query, not an outage."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant query: its labels and value (``values`` for a range query)."""

    metric: dict[str, str]
    value: float | None = None
    values: tuple[tuple[float, float], ...] = ()


def default_url() -> str:
    """TOLLGATE_PROMETHEUS_URL, else the embedded Prometheus on 127.0.0.1:TOLLGATE_PROMETHEUS_PORT."""
    env = settings.current()
    return (env.prometheus_url or f"http://{settings.LOOPBACK}:{env.prometheus_port}").rstrip("/")


def _when(value: float | datetime | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return f"{value.timestamp():.3f}"
    return f"{float(value):.3f}"


def _short(expr: str) -> str:
    one_line = " ".join(expr.split())
    return one_line if len(one_line) <= 120 else one_line[:117] + "..."


def _base(url: str | None) -> str:
    base = (url or default_url()).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise BadInput(f"Prometheus URL {base!r} is not http(s)://HOST:PORT")
    return base


def _call(url: str | None, path: str, params: dict[str, str | None], timeout_s: float, expr: str) -> dict[str, Any]:
    base = _base(url)
    data = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None}).encode()
    req = urllib.request.Request(base + path, data=data, method="POST",  # noqa: S310 - http(s) checked in _base
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    where = f"Prometheus at {base} ({_short(expr)})"
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - the URL is configuration
            body = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        payload = _parse(body, where)
        if payload is not None and payload.get("errorType") == "bad_data":
            raise PromQLBadQuery(f"{where}: {payload.get('error', 'bad query')}") from None
        detail = payload.get("error") if payload else body[:200].decode(errors="replace")
        raise PromQLError(f"{where}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PromQLError(f"{where}: unreachable: {reason}") from None
    payload = _parse(body, where)
    if payload is None:
        raise PromQLError(f"{where}: the answer is not JSON")
    if payload.get("status") != "success":
        raise PromQLError(f"{where}: {payload.get('errorType', 'error')}: {payload.get('error', 'no detail')}")
    return dict(payload.get("data") or {})


def _parse(body: bytes, where: str) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _number(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return math.nan


def query(url: str | None, expr: str, time: float | datetime | None = None, *,
          timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Sample]:
    """An instant query; a vector (one Sample per series) or a scalar (one Sample, no labels)."""
    data = _call(url, "/api/v1/query", {"query": expr, "time": _when(time)}, timeout_s, expr)
    kind, result = data.get("resultType"), data.get("result")
    if kind in ("scalar", "string") and isinstance(result, list):
        return [Sample(metric={}, value=_number(result[1]))]
    if kind == "vector":
        return [Sample(metric=dict(r.get("metric") or {}), value=_number(r["value"][1])) for r in result or []]
    if kind == "matrix":  # a range selector evaluated instantly
        return [Sample(metric=dict(r.get("metric") or {}),
                       values=tuple((float(t), _number(v)) for t, v in r.get("values") or [])) for r in result or []]
    raise PromQLError(f"Prometheus ({_short(expr)}): unexpected result type {kind!r}")


def query_range(url: str | None, expr: str, start: float | datetime, end: float | datetime, step: float | str, *,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Sample]:
    """A range query: one Sample per series, with its ``values`` (timestamp, value)."""
    params: dict[str, str | None] = {"query": expr, "start": _when(start), "end": _when(end),
              "step": step if isinstance(step, str) else f"{float(step):g}"}
    data = _call(url, "/api/v1/query_range", params, timeout_s, expr)
    if data.get("resultType") != "matrix":
        raise PromQLError(f"Prometheus ({_short(expr)}): range query gave {data.get('resultType')!r}, not a matrix")
    return [Sample(metric=dict(r.get("metric") or {}),
                   values=tuple((float(t), _number(v)) for t, v in r.get("values") or []))
            for r in data.get("result") or []]


def scalar(url: str | None, expr: str, time: float | datetime | None = None, *,
           timeout_s: float = DEFAULT_TIMEOUT_S) -> float | None:
    """The one value of an expression; None when it has no series; more than one series is an error."""
    samples = query(url, expr, time, timeout_s=timeout_s)
    if not samples:
        return None
    if len(samples) > 1:
        raise PromQLError(f"Prometheus ({_short(expr)}): {len(samples)} series where one was expected "
                          "(aggregate it, e.g. sum(...))")
    return samples[0].value


def targets(url: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[dict[str, Any]]:
    """The active scrape targets (``/api/v1/targets``): job, instance, health, last error."""
    base = _base(url)
    try:
        with urllib.request.urlopen(base + "/api/v1/targets?state=active", timeout=timeout_s) as resp:  # noqa: S310 - http(s) checked in _base
            payload = json.loads(resp.read())
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
        raise PromQLError(f"Prometheus at {base}: targets unreadable: {getattr(exc, 'reason', exc)}") from None
    return [{"job": t.get("labels", {}).get("job"), "instance": t.get("labels", {}).get("instance"),
             "health": t.get("health"), "last_error": t.get("lastError"), "labels": t.get("labels", {})}
            for t in (payload.get("data") or {}).get("activeTargets", [])]
