"""Aggregates and confidence intervals, computed one way, in one place.

- A rate of 0/1 outcomes (task success, refusal, leakage, violations, hallucination)
  gets a Wilson score interval: it stays inside [0, 1] and behaves at 0 and n.
- A mean of continuous per-sample scores (groundedness, relevancy, text metrics)
  gets a Student-t interval on the per-sample means (each sample's score is already
  the mean over `--repeats` judge calls).
- The judge's own noise is reported separately: the mean over samples of the
  standard deviation across repeats (0 when --repeats 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    if n <= 0:
        return None, None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float | None, float | None]:
    n = len(values)
    if n == 0:
        return None, None
    m = sum(values) / n
    if n == 1:
        return m, m
    from scipy import stats  # scipy is in the control-plane env; imported late to keep startup quick

    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return m - half, m + half


def stdev(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def summarize(name: str, values: Sequence[float], binary: bool) -> dict[str, float | None]:
    """`name`, `name_ci_low`, `name_ci_high`, `name_n` for one metric's per-sample values."""
    vals = [float(v) for v in values]
    lo, hi = wilson_interval(sum(vals), len(vals)) if binary else t_interval(vals)
    return {name: mean(vals), f"{name}_ci_low": lo, f"{name}_ci_high": hi, f"{name}_n": float(len(vals))}
