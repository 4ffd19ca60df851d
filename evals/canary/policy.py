"""The progressive canary's policy file (``thresholds/canary-policy.yaml``): steps, timing, checks.

One parser, :func:`load_policy`; every refusal is one line naming the file and the field
(:class:`~evals.errors.BadInput`, exit 2). The file says

- ``steps``: canary weights in percent, strictly rising, ending at 100, each held for
  ``hold_s`` seconds (the ``traffic`` Param of model_promotion replaces every hold);
- ``analysis``: how often a step is analysed (``interval_s``), over which PromQL window
  (``window_s``), how many Failed analyses abort (``max_failed_checks``), how long a step
  may stay Inconclusive before that counts as Failed (``inconclusive_deadline_s``), and the
  fewest requests per arm before anything is concluded (``min_requests_per_arm``; only
  errors or guardrail hits that break the bound even if every missing request succeeds
  fail earlier);
- ``checks``: each bound, absolute AND relative to the stable arm over the same window;
- ``old_stable_warm_s``: how long the previous stable keeps running after 100 %;
- ``metrics``: the metric and label names the gateway exports (the PromQL is built from them).

Pure: no I/O beyond reading the file, no Prometheus, no Airflow.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evals import inputs, settings
from evals.errors import BadInput

DEFAULT_POLICY = settings.REPO_ROOT / "thresholds" / "canary-policy.yaml"
QUALITY_SOURCES = ("prometheus", "requestlog")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True)
class Step:
    weight: int  # percent of requests on the canary
    hold_s: float  # seconds the weight is held (and analysed) before the next step


@dataclass(frozen=True)
class Analysis:
    interval_s: float = 60.0
    window_s: float = 300.0
    max_failed_checks: int = 2
    inconclusive_deadline_s: float = 900.0
    min_requests_per_arm: int = 1000


@dataclass(frozen=True)
class Bound:
    """One check: an absolute bound on the canary and a bound relative to stable (None: not checked)."""

    absolute: float | None = None
    vs_stable: float | None = None  # delta (rates) or ratio (latencies); see Checks


@dataclass(frozen=True)
class QualityCheck:
    min: float = 0.85  # mean feedback score of the canary
    max_drop_vs_stable: float = 0.05  # stable mean - canary mean
    alpha: float = 0.05  # Welch's t-test
    min_effect_size: float = 0.2  # |Cohen's d| that counts as a regression
    min_samples: int = 30  # feedback scores per arm before quality is judged
    source: str = "prometheus"  # where the per-request scores come from


@dataclass(frozen=True)
class Checks:
    error_ratio: Bound = Bound(0.02, 0.01)  # canary errors / requests; vs stable: max delta
    latency_p95_s: Bound = Bound(1.2, 1.5)  # vs stable: max ratio canary / stable
    ttft_p95_s: Bound = Bound(0.5, 1.5)  # vs stable: max ratio
    guardrail_rate: Bound = Bound(0.05, 0.02)  # violations / requests; vs stable: max delta
    quality: QualityCheck = QualityCheck()


@dataclass(frozen=True)
class Metrics:
    requests: str = "llm_requests_total"
    errors: str = "llm_errors_total"
    fallback: str = "llm_fallback_total"  # canary requests that failed early and were answered by stable
    duration: str = "llm_request_duration_seconds"
    ttft: str = "llm_time_to_first_token_seconds"
    guardrail: str = "llm_guardrail_violations_total"
    feedback: str = "llm_quality_score"
    arm_label: str = "arm"
    model_label: str = "model"
    namespace_label: str = "namespace"


@dataclass(frozen=True)
class CanaryRolloutPolicy:
    path: str
    steps: tuple[Step, ...]
    analysis: Analysis = Analysis()
    checks: Checks = Checks()
    old_stable_warm_s: float = 600.0
    metrics: Metrics = Metrics()
    description: str = ""
    profile: str = "production"
    sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_hold(self, hold_s: float | None) -> CanaryRolloutPolicy:
        """The same policy with every step held ``hold_s`` seconds (the ``traffic`` Param)."""
        if hold_s is None:
            return self
        if not (math.isfinite(hold_s) and hold_s > 0):
            raise BadInput(f"traffic {hold_s!r}: seconds per step must be > 0")
        return _replace(self, steps=tuple(Step(s.weight, float(hold_s)) for s in self.steps))

    def total_hold_s(self) -> float:
        return sum(s.hold_s for s in self.steps)

    def describe(self) -> str:
        """A few markdown lines for the approval page: what will run after an approval."""
        steps = " -> ".join(f"{s.weight} % ({s.hold_s:g} s)" for s in self.steps)
        a, ch, q = self.analysis, self.checks, self.checks.quality
        return "\n".join([
            f"### Canary policy: `{self.path}` ({self.profile})",
            "",
            f"- steps: {steps}; about {self.total_hold_s() / 60:.1f} min in all",
            f"- analysis every {a.interval_s:g} s over {a.window_s:g} s; {a.max_failed_checks} failed analyses "
            f"abort; Inconclusive (< {a.min_requests_per_arm} requests per arm, or a metric absent) for more "
            f"than {a.inconclusive_deadline_s:g} s counts as Failed",
            f"- canary error ratio <= {_b(ch.error_ratio.absolute)} and <= stable + {_b(ch.error_ratio.vs_stable)}; "
            f"p95 latency <= {_b(ch.latency_p95_s.absolute)} s and <= {_b(ch.latency_p95_s.vs_stable)} x stable; "
            f"p95 TTFT <= {_b(ch.ttft_p95_s.absolute)} s and <= {_b(ch.ttft_p95_s.vs_stable)} x stable; "
            f"guardrail rate <= {_b(ch.guardrail_rate.absolute)} and <= stable + {_b(ch.guardrail_rate.vs_stable)}",
            f"- feedback quality >= {q.min:g}, no drop > {q.max_drop_vs_stable:g} vs stable, no significant "
            f"regression (Welch p < {q.alpha:g} and |Cohen's d| >= {q.min_effect_size:g}; {q.min_samples}+ scores "
            f"per arm, from {q.source})",
            f"- at 100 %: the old stable stays warm {self.old_stable_warm_s:g} s for a fast rollback",
        ])


def _b(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


# -- parsing ----------------------------------------------------------------------------------


class _Reader:
    """Typed access to one mapping of the file; errors name the file and the dotted field."""

    def __init__(self, path: str, where: str, data: Any, known: set[str]) -> None:
        self.path, self.where = path, where
        if not isinstance(data, dict):
            raise BadInput(f"{path}: {where or 'the file'} must be a mapping")
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise BadInput(f"{path}: {self._name(unknown[0])}: unknown field (known: {', '.join(sorted(known))})")
        self.data = data

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, why: str) -> BadInput:
        return BadInput(f"{self.path}: {self._name(key)}: {why}")

    def number(self, key: str, default: float | None, *, minimum: float = 0.0, above: bool = False,
               maximum: float | None = None, optional: bool = False) -> float | None:
        raw = self.data.get(key, default)
        if raw is None:
            if optional:
                return None
            raise self.fail(key, "is required")
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise self.fail(key, f"{raw!r} is not a finite number")
        if raw < minimum or (above and raw == minimum):
            raise self.fail(key, f"{raw!r} must be {'>' if above else '>='} {minimum:g}")
        if maximum is not None and raw > maximum:
            raise self.fail(key, f"{raw!r} must be <= {maximum:g}")
        return float(raw)

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        raw = self.data.get(key, default)
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
            raise self.fail(key, f"{raw!r} must be an integer >= {minimum}")
        return raw

    def name(self, key: str, default: str, pattern: re.Pattern[str]) -> str:
        raw = self.data.get(key, default)
        if not isinstance(raw, str) or not pattern.fullmatch(raw):
            raise self.fail(key, f"{raw!r} is not a Prometheus name")
        return raw


def _steps(path: str, raw: Any) -> tuple[Step, ...]:
    if not isinstance(raw, list) or not raw:
        raise BadInput(f"{path}: steps: must be a non-empty list of {{weight, hold_s}}")
    steps: list[Step] = []
    for i, item in enumerate(raw):
        r = _Reader(path, f"steps[{i}]", item, {"weight", "hold_s"})
        weight = r.data.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 < weight <= 100:
            raise r.fail("weight", f"{weight!r} must be an integer percent in 1..100")
        if steps and weight <= steps[-1].weight:
            raise r.fail("weight", f"{weight} must be above the previous step's {steps[-1].weight}")
        steps.append(Step(weight, r.number("hold_s", None, above=True) or 0.0))
    if steps[-1].weight != 100:
        raise BadInput(f"{path}: steps[{len(steps) - 1}].weight: the last step must be 100 (full rollout)")
    return tuple(steps)


def _bound(path: str, where: str, raw: Any, default: Bound, relative: str) -> Bound:
    r = _Reader(path, where, raw if raw is not None else {}, {"max", relative})
    absolute = r.number("max", default.absolute, optional=True)
    vs = r.number(relative, default.vs_stable, optional=True)
    if relative.startswith("max_ratio") and vs is not None and vs < 1.0:
        raise r.fail(relative, f"{vs:g} must be >= 1 (a ratio canary / stable)")
    if absolute is None and vs is None:
        raise r.fail("max", "a check needs a bound (max or " + relative + ")")
    return Bound(absolute, vs)


def _quality(path: str, raw: Any) -> QualityCheck:
    d = QualityCheck()
    r = _Reader(path, "checks.quality", raw if raw is not None else {}, {
        "min", "max_drop_vs_stable", "alpha", "min_effect_size", "min_samples", "source"})
    source = r.data.get("source", d.source)
    if source not in QUALITY_SOURCES:
        raise r.fail("source", f"{source!r} must be one of {', '.join(QUALITY_SOURCES)}")
    alpha = r.number("alpha", d.alpha, above=True, maximum=1.0)
    if alpha == 1.0:
        raise r.fail("alpha", "must be < 1")
    return QualityCheck(
        min=r.number("min", d.min, maximum=1.0) or 0.0,
        max_drop_vs_stable=r.number("max_drop_vs_stable", d.max_drop_vs_stable, maximum=1.0) or 0.0,
        alpha=alpha or d.alpha, min_effect_size=r.number("min_effect_size", d.min_effect_size) or 0.0,
        min_samples=r.integer("min_samples", d.min_samples, minimum=2), source=source)


def _checks(path: str, raw: Any) -> Checks:
    d = Checks()
    r = _Reader(path, "checks", raw if raw is not None else {},
                {"error_ratio", "latency_p95_s", "ttft_p95_s", "guardrail_rate", "quality"})
    return Checks(
        error_ratio=_bound(path, "checks.error_ratio", r.data.get("error_ratio"), d.error_ratio,
                           "max_delta_vs_stable"),
        latency_p95_s=_bound(path, "checks.latency_p95_s", r.data.get("latency_p95_s"), d.latency_p95_s,
                             "max_ratio_vs_stable"),
        ttft_p95_s=_bound(path, "checks.ttft_p95_s", r.data.get("ttft_p95_s"), d.ttft_p95_s,
                          "max_ratio_vs_stable"),
        guardrail_rate=_bound(path, "checks.guardrail_rate", r.data.get("guardrail_rate"), d.guardrail_rate,
                              "max_delta_vs_stable"),
        quality=_quality(path, r.data.get("quality")),
    )


def _analysis(path: str, raw: Any) -> Analysis:
    d = Analysis()
    r = _Reader(path, "analysis", raw if raw is not None else {},
                {"interval_s", "window_s", "max_failed_checks", "inconclusive_deadline_s", "min_requests_per_arm"})
    a = Analysis(
        interval_s=r.number("interval_s", d.interval_s, above=True) or d.interval_s,
        window_s=r.number("window_s", d.window_s, above=True) or d.window_s,
        max_failed_checks=r.integer("max_failed_checks", d.max_failed_checks, minimum=1),
        inconclusive_deadline_s=r.number("inconclusive_deadline_s", d.inconclusive_deadline_s, above=True) or 0.0,
        min_requests_per_arm=r.integer("min_requests_per_arm", d.min_requests_per_arm, minimum=1),
    )
    if a.inconclusive_deadline_s < a.interval_s:
        raise r.fail("inconclusive_deadline_s", f"{a.inconclusive_deadline_s:g} must be >= interval_s "
                                                f"({a.interval_s:g}): at least one analysis per step")
    return a


def _metrics(path: str, raw: Any) -> Metrics:
    d = Metrics()
    keys = set(asdict(d))
    r = _Reader(path, "metrics", raw if raw is not None else {}, keys)
    return Metrics(**{k: r.name(k, getattr(d, k), _LABEL_NAME if k.endswith("_label") else _METRIC_NAME)
                      for k in keys})


def parse_policy(text: str, path: str) -> CanaryRolloutPolicy:
    """The policy in ``text`` (YAML); BadInput naming ``path`` and the field on any flaw."""
    import yaml

    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader (libyaml's when built: DAGs read this at parse time)
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    r = _Reader(path, "", data, {"description", "profile", "steps", "analysis", "checks",
                                 "old_stable_warm_s", "metrics"})
    return CanaryRolloutPolicy(
        path=path, steps=_steps(path, r.data.get("steps")), analysis=_analysis(path, r.data.get("analysis")),
        checks=_checks(path, r.data.get("checks")),
        old_stable_warm_s=r.number("old_stable_warm_s", 600.0) or 0.0,
        metrics=_metrics(path, r.data.get("metrics")),
        description=str(r.data.get("description") or ""), profile=str(r.data.get("profile") or "production"),
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


def load_policy(path: str | Path | None = None, flag: str = "--policy") -> CanaryRolloutPolicy:
    """Read and validate a policy file (default ``thresholds/canary-policy.yaml``)."""
    p = Path(path) if path else DEFAULT_POLICY
    return parse_policy(inputs.read_text(p, flag), str(p))

