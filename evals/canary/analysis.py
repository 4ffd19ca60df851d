"""One analysis of a progressive canary step, over Prometheus: Successful, Failed or Inconclusive.

Per arm (the gateway's ``arm`` label: stable | canary) over the same window:

    requests        sum(increase(llm_requests_total{sel}[w]))
    error ratio     (sum(increase(llm_errors_total{sel}[w])) or vector(0)) / requests
    p95 latency     histogram_quantile(0.95, sum by (le) (rate(llm_request_duration_seconds_bucket{sel}[w])))
    p95 TTFT        the same over llm_time_to_first_token_seconds_bucket
    guardrail rate  (sum(increase(llm_guardrail_violations_total{sel}[w])) or vector(0)) / requests
    quality         per-request feedback scores: Welch's t-test and Cohen's d (evals.canary.stats)

``sel`` is ``model="NAME",arm="ARM"`` plus ``namespace="NS"`` when a Kubernetes namespace is
given. Error and guardrail counters exist only after their first event, so their absence
counts as zero (``or vector(0)``), but only beside a present request counter; an absent
request counter or histogram is "metric absent".

Each check compares the canary with an absolute bound AND with the stable arm. Where the
quality scores come from: ``prometheus`` rebuilds them from the ``llm_quality_score``
histogram (bucket midpoints; no flush lag, the embedded default) and ``requestlog``
reads the exact per-request scores of the Parquet request log (production: a histogram
has no sum of squares, so its variance, and Welch's test, is only approximate).

Fail closed: too few requests is Inconclusive (unless the canary's errors or guardrail
hits already break the absolute bound with every missing request counted a success: a
failure no further request can undo is Failed at once); a metric absent or Prometheus unreachable
is Inconclusive, never Successful; the step controller (:func:`next_action`) turns an
Inconclusive that lasts past the policy's deadline into a Failed analysis, and
``max_failed_checks`` Failed analyses abort the canary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from evals.canary.policy import Bound, CanaryRolloutPolicy
from evals.canary.stats import CANARY, STABLE, welch_test

Sample = tuple[dict[str, str], float]
QueryFn = Callable[[str], list[Sample]]  # an instant query: the result vector (labels, value)
ScoresFn = Callable[[str, float], list[float]]  # (arm, window seconds) -> feedback scores
_LABEL_VALUE = re.compile(r'[^"\\\n]*')


class QueryError(Exception):
    """Prometheus could not answer (unreachable, HTTP error, bad response): the analysis is Inconclusive."""


class Phase(StrEnum):
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # pass | fail | unknown
    canary: float | None
    stable: float | None
    bound: str
    reason: str


@dataclass(frozen=True)
class AnalysisResult:
    phase: Phase
    checks: tuple[CheckResult, ...]
    requests: dict[str, float]
    window_s: float
    reasons: tuple[str, ...]
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phase"] = self.phase.value
        return d

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "fail"]


# -- PromQL -------------------------------------------------------------------------------------


def selector(policy: CanaryRolloutPolicy, model: str, arm: str, namespace: str | None = None) -> str:
    """The label matcher of one arm (values must not carry quotes: they are names)."""
    m = policy.metrics
    parts = {m.model_label: model, m.arm_label: arm}
    if namespace:
        parts[m.namespace_label] = namespace
    for value in parts.values():
        if not _LABEL_VALUE.fullmatch(value):
            raise ValueError(f"label value {value!r} has a quote, backslash or newline")
    return ",".join(f'{k}="{v}"' for k, v in parts.items())


def _range(window_s: float) -> str:
    return f"{max(1, int(round(window_s)))}s"


def queries(policy: CanaryRolloutPolicy, model: str, arm: str, window_s: float,
            namespace: str | None = None) -> dict[str, str]:
    """Every PromQL expression of one arm's analysis (also rendered into infra/k8s's AnalysisTemplate)."""
    m, sel, w = policy.metrics, selector(policy, model, arm, namespace), _range(window_s)
    # The requests routed to the arm: a canary request that failed before its first byte is
    # answered (and counted in llm_requests_total) by stable; its error and its fallback count
    # on the canary, so the canary's share is requests + fallbacks (else 2 errors / 1 request).
    answered, fell_back = f"sum(increase({m.requests}{{{sel}}}[{w}]))", f"sum(increase({m.fallback}{{{sel}}}[{w}]))"
    requests = f"(({answered} + ({fell_back} or vector(0))) or {fell_back})"

    def quantile(hist: str) -> str:
        return f"histogram_quantile(0.95, sum by (le) (rate({hist}_bucket{{{sel}}}[{w}])))"

    return {
        "requests": requests,
        "error_ratio": f"(sum(increase({m.errors}{{{sel}}}[{w}])) or vector(0)) / {requests}",
        "latency_p95_s": quantile(m.duration),
        "ttft_p95_s": quantile(m.ttft),
        "guardrail_rate": f"(sum(increase({m.guardrail}{{{sel}}}[{w}])) or vector(0)) / {requests}",
        "quality_buckets": f"sum by (le) (increase({m.feedback}_bucket{{{sel}}}[{w}]))",
    }


def _scalar(query: QueryFn, expr: str) -> float | None:
    """The first value of an instant vector; None when the vector is empty or the value NaN."""
    result = query(expr)
    if not result:
        return None
    value = float(result[0][1])
    return None if math.isnan(value) else value


def scores_from_buckets(result: Sequence[Sample]) -> list[float]:
    """Per-request scores rebuilt from a cumulative histogram: each bucket's count at its midpoint."""
    points: list[tuple[float, float]] = []
    for labels, value in result:
        raw = labels.get("le")
        if raw is None or math.isnan(value):
            continue
        points.append((math.inf if raw == "+Inf" else float(raw), value))
    points.sort()
    scores: list[float] = []
    prev_le, prev_count = 0.0, 0.0
    for le, count in points:
        n = int(round(count - prev_count))
        mid = prev_le if math.isinf(le) else (prev_le + le) / 2
        scores += [mid] * max(n, 0)
        prev_le, prev_count = (prev_le if math.isinf(le) else le), max(count, prev_count)
    return scores


# -- the checks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Arm:
    requests: float | None
    values: dict[str, float | None]
    scores: list[float]


def _measure(query: QueryFn, exprs: dict[str, str], scores: ScoresFn | None, arm: str, window_s: float) -> _Arm:
    requests = _scalar(query, exprs["requests"])
    values = {k: (_scalar(query, exprs[k]) if requests else None)
              for k in ("error_ratio", "latency_p95_s", "ttft_p95_s", "guardrail_rate")}
    got = list(scores(arm, window_s)) if scores is not None else scores_from_buckets(query(exprs["quality_buckets"]))
    return _Arm(requests, values, got)


def _bound_check(name: str, bound: Bound, canary: float | None, stable: float | None, *, ratio: bool,
                 compare_stable: bool) -> CheckResult:
    rel = "x stable" if ratio else "+ stable"
    text = f"<= {bound.absolute:g}" if bound.absolute is not None else ""
    if bound.vs_stable is not None and compare_stable:
        text += f"{' and ' if text else ''}<= {bound.vs_stable:g} {rel}"
    if canary is None:
        return CheckResult(name, "unknown", None, stable, text, f"{name}: metric absent for the canary")
    broken = []
    if bound.absolute is not None and canary > bound.absolute:
        broken.append(f"{name} {canary:.4g} > {bound.absolute:g}")
    if bound.vs_stable is not None and compare_stable:
        if stable is None:
            return CheckResult(name, "unknown", canary, None, text, f"{name}: metric absent for stable")
        if ratio and stable > 0 and canary / stable > bound.vs_stable:
            broken.append(f"{name} {canary:.4g} is {canary / stable:.2f} x stable {stable:.4g} > {bound.vs_stable:g}")
        if not ratio and canary - stable > bound.vs_stable:
            broken.append(f"{name} {canary:.4g} exceeds stable {stable:.4g} by more than {bound.vs_stable:g}")
    if broken:
        return CheckResult(name, "fail", canary, stable, text, "; ".join(broken))
    return CheckResult(name, "pass", canary, stable, text, f"{name} {canary:.4g} holds")


def _quality_check(policy: CanaryRolloutPolicy, canary: list[float], stable: list[float],
                   compare_stable: bool) -> tuple[CheckResult, dict[str, float]]:
    q = policy.checks.quality
    text = f">= {q.min:g}" + (f", drop <= {q.max_drop_vs_stable:g}, no significant regression" if compare_stable else "")
    if len(canary) < q.min_samples or (compare_stable and len(stable) < q.min_samples):
        return CheckResult("quality", "unknown", None, None, text,
                           f"quality: {len(canary)} canary / {len(stable)} stable feedback scores "
                           f"(need {q.min_samples} per arm)"), {}
    mc = sum(canary) / len(canary)
    ms = sum(stable) / len(stable) if stable else math.nan
    test = welch_test(canary, stable) if compare_stable else None
    metrics = {"canary_quality": mc, "stable_quality": ms, "canary_scored": float(len(canary)),
               "stable_scored": float(len(stable))}
    broken = []
    if mc < q.min:
        broken.append(f"quality {mc:.3f} < {q.min:g}")
    if compare_stable and test is not None:
        metrics.update(quality_welch_t=test.t, quality_p_value=test.p_value, quality_cohens_d=test.cohens_d)
        regression = (not math.isnan(test.p_value) and test.p_value < q.alpha and mc < ms
                      and abs(test.cohens_d) >= q.min_effect_size)
        metrics["canary_significant_quality_regression"] = float(regression)
        if ms - mc > q.max_drop_vs_stable:
            broken.append(f"quality {mc:.3f} is {ms - mc:.3f} below stable {ms:.3f} (> {q.max_drop_vs_stable:g})")
        if regression:
            broken.append(f"quality significantly below stable ({mc:.3f} vs {ms:.3f}, Welch p={test.p_value:.3g}, "
                          f"Cohen's d={test.cohens_d:.2f})")
    status = "fail" if broken else "pass"
    return CheckResult("quality", status, mc, None if math.isnan(ms) else ms, text,
                       "; ".join(broken) or f"quality {mc:.3f} holds"), metrics


def analyse(policy: CanaryRolloutPolicy, query: QueryFn, *, model: str, weight: int, window_s: float | None = None,
            namespace: str | None = None, scores: ScoresFn | None = None) -> AnalysisResult:
    """One analysis of the canary at ``weight`` percent; never raises for Prometheus trouble.

    At 100 % the stable arm serves nothing, so the comparisons with stable are made only
    while stable still has ``min_requests_per_arm`` requests in the window.
    """
    w = float(window_s or policy.analysis.window_s)
    need = policy.analysis.min_requests_per_arm
    try:
        arms = {arm: _measure(query, queries(policy, model, arm, w, namespace), scores, arm, w)
                for arm in (CANARY, STABLE)}
    except QueryError as exc:
        return AnalysisResult(Phase.INCONCLUSIVE, (), {}, w, (f"Prometheus unreachable: {exc}",))
    c, s = arms[CANARY], arms[STABLE]
    requests = {CANARY: c.requests or 0.0, STABLE: s.requests or 0.0}
    compare = weight < 100 or (s.requests or 0) >= need
    short = [f"{arm}: {requests[arm]:.0f} requests in {w:.0f} s (need {need})"
             for arm in ((CANARY, STABLE) if compare else (CANARY,)) if requests[arm] < need]
    if c.requests is None:
        short.insert(0, f"canary: metric absent ({policy.metrics.requests})")
    ch = policy.checks
    checks = [
        _bound_check("error_ratio", ch.error_ratio, c.values["error_ratio"], s.values["error_ratio"], ratio=False,
                     compare_stable=compare),
        _bound_check("latency_p95_s", ch.latency_p95_s, c.values["latency_p95_s"], s.values["latency_p95_s"],
                     ratio=True, compare_stable=compare),
        _bound_check("ttft_p95_s", ch.ttft_p95_s, c.values["ttft_p95_s"], s.values["ttft_p95_s"], ratio=True,
                     compare_stable=compare),
        _bound_check("guardrail_rate", ch.guardrail_rate, c.values["guardrail_rate"], s.values["guardrail_rate"],
                     ratio=False, compare_stable=compare),
    ]
    quality, qmetrics = _quality_check(policy, c.scores, s.scores, compare)
    checks.append(quality)
    metrics = _verdict_metrics(c, s, requests, qmetrics)
    if short:
        # Too few requests: nothing is concluded (Flagger's rule too), except a failure that
        # more requests cannot undo: errors (or guardrail hits) already above the bound even
        # if every request still missing to the minimum succeeded.
        decided = [why for why in (
            _decided_early("error_ratio", ch.error_ratio, c.values["error_ratio"], requests[CANARY], need),
            _decided_early("guardrail_rate", ch.guardrail_rate, c.values["guardrail_rate"], requests[CANARY], need),
        ) if why]
        if decided and c.requests is not None:
            return AnalysisResult(Phase.FAILED, tuple(checks), requests, w, tuple(decided), metrics)
        return AnalysisResult(Phase.INCONCLUSIVE, tuple(checks), requests, w, tuple(short), metrics)
    failed = [x.reason for x in checks if x.status == "fail"]
    if failed:
        return AnalysisResult(Phase.FAILED, tuple(checks), requests, w, tuple(failed), metrics)
    unknown = [x.reason for x in checks if x.status == "unknown"]
    if unknown:
        return AnalysisResult(Phase.INCONCLUSIVE, tuple(checks), requests, w, tuple(unknown), metrics)
    return AnalysisResult(Phase.SUCCESSFUL, tuple(checks), requests, w, ("every check holds",), metrics)


def _decided_early(name: str, bound: Bound, ratio: float | None, requests: float, need: int) -> str | None:
    """Why a ratio check already fails below the minimum sample, or None.

    ``ratio * requests`` events (errors, guardrail hits) over at least ``need`` requests is
    the lowest ratio the window can still reach: above the absolute bound, no further
    request changes the outcome. (The bound relative to stable is left to the full sample:
    stable's ratio still moves.)
    """
    if bound.absolute is None or ratio is None or not requests or math.isnan(ratio):
        return None
    events = ratio * requests
    floor = events / max(requests, float(need))
    if floor <= bound.absolute:
        return None
    return (f"{name}: {events:.3g} in {requests:.3g} canary requests; even if the rest of the minimum {need} "
            f"succeed it stays >= {floor:.4g} > {bound.absolute:g} (decided before the minimum sample)")


def _verdict_metrics(c: _Arm, s: _Arm, requests: dict[str, float], quality: dict[str, float]) -> dict[str, float]:
    """The metric names of thresholds/canary.yaml, so the verdict file goes through evals.gate_check."""
    nan = math.nan
    ce, se = c.values["error_ratio"], s.values["error_ratio"]
    out = {
        "canary_requests": requests[CANARY], "stable_requests": requests[STABLE],
        "canary_error_rate": nan if ce is None else ce, "stable_error_rate": nan if se is None else se,
        "canary_error_rate_delta": nan if ce is None or se is None else ce - se,
        "canary_latency_p95_s": c.values["latency_p95_s"] or nan,
        "stable_latency_p95_s": s.values["latency_p95_s"] or nan,
        "canary_ttft_p95_s": c.values["ttft_p95_s"] or nan, "stable_ttft_p95_s": s.values["ttft_p95_s"] or nan,
        "canary_guardrail_rate": nan if c.values["guardrail_rate"] is None else c.values["guardrail_rate"],
        "canary_min_arm_samples": min(requests[CANARY], requests[STABLE]),
        "canary_quality": nan, "canary_significant_quality_regression": nan,
    }
    out.update(quality)
    return {k: float(v) for k, v in out.items()}


# -- the step controller ------------------------------------------------------------------------


@dataclass(frozen=True)
class StepState:
    """What a step remembers between analyses (it travels through the deferral's kwargs)."""

    weight: int
    started: float  # UTC epoch seconds the weight was set
    failed: int = 0
    inconclusive_since: float | None = None
    analyses: int = 0
    last: dict[str, Any] | None = None


@dataclass(frozen=True)
class Action:
    kind: str  # wait | next | abort
    reason: str
    state: StepState


def next_action(policy: CanaryRolloutPolicy, state: StepState, result: AnalysisResult, now: float,
                hold_s: float) -> Action:
    """What a step does after one analysis: wait for the next, go to the next step, or abort."""
    a = policy.analysis
    phase = result.phase
    inconclusive_since = state.inconclusive_since
    why = "; ".join(result.reasons)
    if phase is Phase.INCONCLUSIVE:
        inconclusive_since = inconclusive_since if inconclusive_since is not None else now
        if now - inconclusive_since >= a.inconclusive_deadline_s:
            phase = Phase.FAILED  # fail closed: undecided for too long
            why = f"inconclusive for {now - inconclusive_since:.0f} s (deadline {a.inconclusive_deadline_s:g} s): {why}"
            inconclusive_since = now
    else:
        inconclusive_since = None
    failed = state.failed + (phase is Phase.FAILED)
    new = StepState(state.weight, state.started, failed, inconclusive_since, state.analyses + 1, result.to_dict())
    if phase is Phase.FAILED and failed >= a.max_failed_checks:
        return Action("abort", f"{failed} failed analyses at {state.weight} % (max {a.max_failed_checks}): {why}",
                      new)
    if phase is Phase.SUCCESSFUL and _held(state, new.analyses, now, hold_s, a.interval_s):
        return Action("next", f"{state.weight} % held {now - state.started:.0f} s ({new.analyses} analyses): {why}",
                      new)
    return Action("wait", f"{phase.value} at {state.weight} %: {why}", new)


def _held(state: StepState, analyses: int, now: float, hold_s: float, interval_s: float) -> bool:
    """The hold is over by the clock AND by the count of analyses (one per interval, Flagger's iterations).

    ``started`` comes from the worker that set the weight, ``now`` from the one analysing: with
    their clocks apart by more than the hold, time alone would pass a step at its first
    Successful analysis. The count cannot be skewed; a slow analysis loop holds longer, never shorter.
    """
    return now - state.started >= hold_s and analyses * interval_s >= hold_s


def window_for(policy: CanaryRolloutPolicy, state: StepState, now: float) -> float:
    """The analysis window: the policy's, but never reaching back before this step's weight was set.

    Between one interval and the policy's window whatever the two clocks say: a clock behind
    the weight's (``now`` before ``started``) gives one interval, never an empty or negative range.
    """
    since = max(now - state.started, policy.analysis.interval_s)
    return min(policy.analysis.window_s, since)


# -- the Prometheus adapter ---------------------------------------------------------------------


def prometheus_query(base_url: str | None = None, *, timeout_s: float = 10.0) -> QueryFn:
    """A QueryFn over Prometheus' HTTP API (evals.promql); an outage is a QueryError (Inconclusive).

    A query Prometheus refuses to parse (``PromQLBadQuery``) is a bug here, not an outage:
    it propagates (bad input) instead of hiding as Inconclusive.
    """
    from evals import promql

    def query(expr: str) -> list[Sample]:
        try:
            samples = promql.query(base_url, expr, timeout_s=timeout_s)
        except promql.PromQLBadQuery:
            raise
        except promql.PromQLError as exc:
            raise QueryError(str(exc)) from None
        return [(s.metric, math.nan if s.value is None else s.value) for s in samples]

    return query
