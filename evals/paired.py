"""Paired comparisons of two versions on the same items, and the sample sizes they need.

Why paired: the candidate and the champion answer the *same* items, so item difficulty
cancels out and a regression is measured on the per-item differences, not on two means
from different runs. The statistics are the libraries' (statsmodels, scipy), not
hand-written numerics:

- pass/fail metrics (task success, exact match): McNemar's exact test
  (``statsmodels.stats.contingency_tables.mcnemar(exact=True)``) on the discordant
  pairs, and the exact conditional 95 % interval of the paired difference: given the
  ``d`` discordant pairs, the share won by the candidate has a Clopper-Pearson interval
  (``proportion_confint(method="beta")``), and the difference is ``d/n * (2p - 1)``.
- scores (token F1, quality_score, similarity): a paired percentile bootstrap of the
  mean difference, 10,000 resamples, seeded (``scipy.stats.bootstrap(paired=True)``).
- planning: items needed to detect a drop of ``mde`` with the given power at ``alpha``
  (two-sided, as the 95 % interval the gates read): unpaired from Cohen's h
  (``NormalIndPower``), paired from the per-item difference's standard deviation
  (``TTestPower``, the paired t-test's power is the one-sample test's on differences).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20261202
CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedResult:
    """The paired difference ``candidate - champion`` over ``n`` shared items."""

    n: int
    value: float  # mean difference
    ci_low: float
    ci_high: float
    method: str
    p_value: float | None = None
    discordant: int | None = None  # binary: items where the two disagree
    sd: float | None = None  # per-item standard deviation of the difference

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_binary(values: Sequence[float]) -> bool:
    return bool(values) and all(v in (0.0, 1.0) for v in values)


def mcnemar_paired(candidate: Sequence[float], champion: Sequence[float],
                   confidence: float = CONFIDENCE) -> PairedResult:
    """McNemar's exact test and the exact conditional interval of the paired difference."""
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.proportion import proportion_confint

    if len(candidate) != len(champion) or not candidate:
        raise ValueError("paired data must be two non-empty sequences of the same length")
    n = len(candidate)
    both = sum(1 for a, b in zip(candidate, champion, strict=True) if a == 1 and b == 1)
    cand_only = sum(1 for a, b in zip(candidate, champion, strict=True) if a == 1 and b == 0)
    champ_only = sum(1 for a, b in zip(candidate, champion, strict=True) if a == 0 and b == 1)
    neither = n - both - cand_only - champ_only
    discordant = cand_only + champ_only
    value = (cand_only - champ_only) / n
    if discordant == 0:
        return PairedResult(n=n, value=0.0, ci_low=0.0, ci_high=0.0, p_value=1.0, discordant=0, sd=0.0,
                            method="McNemar exact (no discordant pairs)")
    p_value = float(mcnemar([[both, cand_only], [champ_only, neither]], exact=True).pvalue)
    lo, hi = proportion_confint(cand_only, discordant, alpha=1 - confidence, method="beta")
    scale = discordant / n
    sd = math.sqrt(max(0.0, discordant / n - value * value) * n / (n - 1)) if n > 1 else 0.0
    return PairedResult(n=n, value=value, ci_low=scale * (2 * float(lo) - 1), ci_high=scale * (2 * float(hi) - 1),
                        p_value=p_value, discordant=discordant, sd=sd,
                        method=f"McNemar exact, p={p_value:.3g} ({cand_only} won, {champ_only} lost of {n})")


def paired_bootstrap(candidate: Sequence[float], champion: Sequence[float], *, confidence: float = CONFIDENCE,
                     n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> PairedResult:
    """Percentile interval of the mean paired difference, ``n_resamples`` seeded resamples of items."""
    import numpy as np
    from scipy import stats

    if len(candidate) != len(champion) or not candidate:
        raise ValueError("paired data must be two non-empty sequences of the same length")
    a, b = np.asarray(candidate, dtype=float), np.asarray(champion, dtype=float)
    diff = a - b
    value = float(diff.mean())
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    method = f"paired bootstrap, {n_resamples} resamples, seed {seed}"
    if len(diff) < 2 or sd == 0.0:
        return PairedResult(n=len(diff), value=value, ci_low=value, ci_high=value, sd=sd,
                            method=method + " (constant difference)")
    res = stats.bootstrap((a, b), _mean_difference, paired=True, vectorized=True, n_resamples=n_resamples,
                          confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    return PairedResult(n=len(diff), value=value, ci_low=float(res.confidence_interval.low),
                        ci_high=float(res.confidence_interval.high), sd=sd, method=method)


def _mean_difference(x: Any, y: Any, axis: int = -1) -> Any:
    return (x - y).mean(axis=axis)


def compare(candidate: Sequence[float], champion: Sequence[float], *, seed: int = BOOTSTRAP_SEED) -> PairedResult:
    """McNemar for pass/fail data on both sides, the paired bootstrap otherwise."""
    if is_binary(candidate) and is_binary(champion):
        return mcnemar_paired(candidate, champion)
    return paired_bootstrap(candidate, champion, seed=seed)


def pair_by_id(candidate: dict[str, float], champion: dict[str, float]) -> tuple[list[str], list[float], list[float]]:
    """The ids both answered, in the candidate's order, with both values."""
    ids = [i for i in candidate if i in champion]
    return ids, [candidate[i] for i in ids], [champion[i] for i in ids]


# -- planning -------------------------------------------------------------------------


def unpaired_n(p0: float, mde: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Items per arm to detect ``p0 -> p0 - mde`` between two independent runs (Cohen's h, two-sided)."""
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    p1 = min(1.0, max(0.0, p0 - mde))
    h = abs(float(proportion_effectsize(p0, p1)))
    if h == 0:
        raise ValueError(f"no detectable difference between {p0} and {p1}")
    return math.ceil(NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=1.0,
                                                  alternative="two-sided"))


def paired_n(mde: float, sd: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Items to detect a mean paired difference of ``mde`` when per-item differences have ``sd``."""
    from statsmodels.stats.power import TTestPower

    if sd <= 0:
        raise ValueError("the per-item difference needs a positive standard deviation")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a huge effect has no root above n=2: statsmodels warns and gives NaN
        n = TTestPower().solve_power(effect_size=mde / sd, alpha=alpha, power=power, alternative="two-sided")
    n = float(n)
    return max(2, math.ceil(n)) if math.isfinite(n) else 2


def binary_difference_sd(mde: float, discordance: float) -> float:
    """SD of a per-item pass/fail difference with mean ``-mde`` and discordant share ``psi``.

    d is -1, 0 or +1, so Var(d) = psi - mde^2. A drop of ``mde`` needs at least ``mde``
    discordant items; ``discordance`` below that is raised to it (a pure drop, no noise).
    """
    psi = max(discordance, mde)
    return math.sqrt(max(psi - mde * mde, 1e-12))


def discordance(a: Sequence[float], b: Sequence[float]) -> float:
    """Share of items on which two pass/fail runs disagree (run-to-run noise of the same version)."""
    return sum(1 for x, y in zip(a, b, strict=True) if x != y) / len(a) if a else 0.0
