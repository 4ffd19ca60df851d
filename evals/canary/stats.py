"""The canary's decisions, as pure functions: who gets the canary, how each arm scored,
and whether the candidate is promoted or rolled back.

Definitions (the metric names of the verdict file, judged by thresholds/canary.yaml):

    canary_requests / stable_requests   requests sent to each arm
    canary_error_rate                   failed requests / requests on the canary arm
    canary_error_rate_delta             canary_error_rate - stable_error_rate
    canary_quality                      mean per-request quality score (0..1) of answered,
                                        scored canary requests; stable_quality likewise
    canary_quality_delta                canary_quality - stable_quality
    quality_welch_t / quality_p_value   Welch's t-test, canary vs stable quality scores
    quality_cohens_d                    Cohen's d (pooled SD), canary - stable; < 0 is worse
    canary_significant_quality_regression
                                        1 when the canary is worse with p < alpha AND
                                        |d| >= min_effect_size, else 0 (NaN: not computable)
    canary_min_arm_samples              min(canary_requests, stable_requests)

Decision: ROLLBACK when a bound is broken; INCONCLUSIVE when nothing is broken but an arm
has fewer than ``min_samples`` requests or quality cannot be measured; PROMOTE otherwise.
INCONCLUSIVE fails closed: the action is rollback.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

STABLE, CANARY = "stable", "canary"


class Decision(StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    INCONCLUSIVE = "inconclusive"


# -- sticky assignment ---------------------------------------------------------------------


def bucket(user_id: str, salt: str = "") -> float:
    """A uniform number in [0, 1) fixed by (salt, user_id): the same user always lands the same."""
    digest = hashlib.sha256(f"{salt}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_arm(user_id: str, canary_weight: float, salt: str = "") -> str:
    """CANARY for a ``canary_weight`` share of users, STABLE for the rest; sticky per user.

    Raising the weight only moves users from stable to canary, never back (a user's bucket
    is fixed), so ramping a canary up keeps everyone who already saw it on it.
    """
    if not (isinstance(canary_weight, (int, float)) and 0.0 <= canary_weight <= 1.0):
        raise ValueError(f"canary_weight {canary_weight!r} must be in [0, 1]")
    return CANARY if bucket(str(user_id), salt) < canary_weight else STABLE


# -- per-request quality ---------------------------------------------------------------------

_PUNCT_EDGES = re.compile(r"^[\s\"'`*•\-:.]+|[\s\"'`*.]+$")


def normalize_line(text: str) -> str:
    """First non-empty line, lower case, single spaces, no quotes/bullets/trailing period."""
    first = next((ln for ln in (text or "").splitlines() if ln.strip()), "")
    return " ".join(_PUNCT_EDGES.sub("", first).lower().split())


def order_line_quality(answer: str, reference: str) -> float:
    """1.0 for a normalized exact match, else token F1 (partial credit, deterministic)."""
    a, r = normalize_line(answer), normalize_line(reference)
    if a == r:
        return 1.0
    at, rt = a.split(), r.split()
    if not at or not rt:
        return 0.0
    common = 0
    pool = list(rt)
    for tok in at:
        if tok in pool:
            pool.remove(tok)
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(at), common / len(rt)
    return 2 * precision * recall / (precision + recall)


# -- statistics -----------------------------------------------------------------------------


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _var(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return math.nan
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


@dataclass(frozen=True)
class WelchResult:
    t: float
    p_value: float
    cohens_d: float


def welch_test(canary: Sequence[float], stable: Sequence[float]) -> WelchResult:
    """Welch's t-test (two-sided; Student's t distribution from scipy) and Cohen's d, canary vs stable.

    NaN when either arm has fewer than two values. Both arms constant: t and d are 0 with
    p = 1 when the means agree, +-inf with p = 0 when they differ (scipy returns NaN there).
    """
    if len(canary) < 2 or len(stable) < 2:
        return WelchResult(math.nan, math.nan, math.nan)
    if min(canary) == max(canary) and min(stable) == max(stable):
        # Both arms constant, judged on the values themselves: the float mean of N equal values
        # is off by an ulp or two and its "variance" ~1e-34, which made 0.05 vs 0.05 significant.
        if canary[0] == stable[0]:
            return WelchResult(0.0, 1.0, 0.0)
        inf = math.copysign(math.inf, canary[0] - stable[0])
        return WelchResult(inf, 0.0, inf)
    mc, ms = _mean(canary), _mean(stable)
    vc, vs = _var(canary), _var(stable)
    pooled = math.sqrt(((len(canary) - 1) * vc + (len(stable) - 1) * vs) / (len(canary) + len(stable) - 2))
    se = math.sqrt(vc / len(canary) + vs / len(stable))
    if se == 0:
        if mc == ms:
            return WelchResult(0.0, 1.0, 0.0)
        inf = math.copysign(math.inf, mc - ms)
        return WelchResult(inf, 0.0, inf)
    from scipy import stats

    # Welch-Satterthwaite degrees of freedom; the statistic by hand so near-constant arms do
    # not trip scipy's moment warnings, the distribution from scipy.
    t = (mc - ms) / se
    num = (vc / len(canary) + vs / len(stable)) ** 2
    den = (vc / len(canary)) ** 2 / (len(canary) - 1) + (vs / len(stable)) ** 2 / (len(stable) - 1)
    df = num / den if den > 0 else float(len(canary) + len(stable) - 2)
    p = float(2.0 * stats.t.sf(abs(t), df))
    d = (mc - ms) / pooled if pooled > 0 else math.copysign(math.inf, mc - ms) if mc != ms else 0.0
    return WelchResult(t, min(1.0, p), d)


# -- arms, policy, verdict --------------------------------------------------------------------


@dataclass(frozen=True)
class ArmStats:
    """What one arm did: requests sent, requests failed, quality scores of scored answers."""

    requests: int = 0
    errors: int = 0
    quality: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.requests < 0 or not 0 <= self.errors <= self.requests:
            raise ValueError(f"need 0 <= errors ({self.errors}) <= requests ({self.requests})")
        if len(self.quality) > self.requests - self.errors:
            raise ValueError("more quality scores than answered requests")

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else math.nan

    @property
    def mean_quality(self) -> float:
        return _mean(self.quality)


@dataclass(frozen=True)
class CanaryPolicy:
    """The bounds a canary is judged against (defaults: the users' CI flags and SLOs, thresholds/canary.yaml)."""

    quality_min: float = 0.85
    error_rate_max: float = 0.02
    error_rate_delta_max: float = 0.01
    min_samples: int = 1000
    alpha: float = 0.05
    min_effect_size: float = 0.2

    def __post_init__(self) -> None:
        for name in ("quality_min", "error_rate_max"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name} {v!r} must be in [0, 1]")
        if not (isinstance(self.error_rate_delta_max, (int, float)) and 0.0 <= self.error_rate_delta_max <= 1.0):
            raise ValueError(f"error_rate_delta_max {self.error_rate_delta_max!r} must be in [0, 1]")
        if not (isinstance(self.min_samples, int) and self.min_samples >= 1):
            raise ValueError(f"min_samples {self.min_samples!r} must be an integer >= 1")
        if not (0.0 < self.alpha < 1.0):
            raise ValueError(f"alpha {self.alpha!r} must be in (0, 1)")
        if not (self.min_effect_size >= 0.0 and math.isfinite(self.min_effect_size)):
            raise ValueError(f"min_effect_size {self.min_effect_size!r} must be >= 0")


@dataclass(frozen=True)
class CanaryVerdict:
    decision: Decision
    reasons: tuple[str, ...]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def promote(self) -> bool:
        return self.decision is Decision.PROMOTE

    @property
    def action(self) -> str:
        """What to do: promote, or roll back (INCONCLUSIVE fails closed)."""
        return "promote" if self.promote else "rollback"


def canary_metrics(stable: ArmStats, canary: ArmStats, policy: CanaryPolicy) -> dict[str, float]:
    test = welch_test(canary.quality, stable.quality)
    if math.isnan(test.p_value):
        regression = math.nan
    else:
        regression = float(test.p_value < policy.alpha and canary.mean_quality < stable.mean_quality
                           and abs(test.cohens_d) >= policy.min_effect_size)
    return {
        "canary_requests": float(canary.requests),
        "stable_requests": float(stable.requests),
        "canary_errors": float(canary.errors),
        "stable_errors": float(stable.errors),
        "canary_error_rate": canary.error_rate,
        "stable_error_rate": stable.error_rate,
        "canary_error_rate_delta": canary.error_rate - stable.error_rate,
        "canary_scored": float(len(canary.quality)),
        "stable_scored": float(len(stable.quality)),
        "canary_quality": canary.mean_quality,
        "stable_quality": stable.mean_quality,
        "canary_quality_delta": canary.mean_quality - stable.mean_quality,
        "quality_welch_t": test.t,
        "quality_p_value": test.p_value,
        "quality_cohens_d": test.cohens_d,
        "canary_significant_quality_regression": regression,
        "canary_min_arm_samples": float(min(canary.requests, stable.requests)),
    }


def decide(stable: ArmStats, canary: ArmStats, policy: CanaryPolicy) -> CanaryVerdict:
    """Promote only when every bound holds on enough samples; anything unmeasurable fails closed."""
    m = canary_metrics(stable, canary, policy)
    broken: list[str] = []
    unsure: list[str] = []

    def bad(value: float) -> bool:
        return math.isnan(value)

    if bad(m["canary_error_rate"]) or bad(m["stable_error_rate"]):
        unsure.append("an arm received no requests: error rates cannot be compared")
    else:
        if m["canary_error_rate"] > policy.error_rate_max:
            broken.append(f"canary error rate {m['canary_error_rate']:.2%} > {policy.error_rate_max:.2%}")
        if m["canary_error_rate_delta"] > policy.error_rate_delta_max:
            broken.append(f"canary error rate exceeds stable by {m['canary_error_rate_delta']:.2%} "
                          f"> {policy.error_rate_delta_max:.2%}")
    if bad(m["canary_quality"]):
        unsure.append("no scored canary answers: quality cannot be measured")
    elif m["canary_quality"] < policy.quality_min:
        broken.append(f"canary quality {m['canary_quality']:.3f} < {policy.quality_min:.3f}")
    if m["canary_significant_quality_regression"] == 1.0:
        broken.append(f"canary quality significantly below stable ({m['canary_quality']:.3f} vs "
                      f"{m['stable_quality']:.3f}, Welch p={m['quality_p_value']:.3g}, "
                      f"Cohen's d={m['quality_cohens_d']:.2f})")
    elif bad(m["canary_significant_quality_regression"]):
        unsure.append("fewer than two scored answers in an arm: no significance test")
    if m["canary_min_arm_samples"] < policy.min_samples:
        unsure.append(f"only {int(m['canary_min_arm_samples'])} requests in the smaller arm "
                      f"(need {policy.min_samples} per arm)")
    if broken:
        return CanaryVerdict(Decision.ROLLBACK, tuple(broken + unsure), m)
    if unsure:
        return CanaryVerdict(Decision.INCONCLUSIVE, tuple(unsure), m)
    return CanaryVerdict(Decision.PROMOTE, ("every canary bound holds",), m)
