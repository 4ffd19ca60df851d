"""The drift statistics: pure numpy (scipy only for the p-value distributions), O(n) per window.

Why not call scipy per window: ``ks_2samp`` and ``wasserstein_distance`` sort both samples
and search the union every time (about 1.4 s for 1M + 1M values). The reference is
summarised once (:mod:`evals.drift.reference`: sorted values, quantile bins), so a window
only sorts the current sample (a vectorised sort, ~20 ms per 1M) and walks the merge of
the two sorted arrays once for both KS and Wasserstein. The values are the same numbers
scipy returns (tests/evals/drift/test_stats.py holds them to 1e-9):

- KS: ``D = sup |F_ref - F_cur|`` on the union of values; the p-value is scipy's own choice
  (exact for ``max(n) <= 10000``, then it simply calls ``scipy.stats.ks_2samp``, else
  Smirnov's asymptotic ``kstwo.sf(D, round(n1 n2 / (n1 + n2)))``).
- Wasserstein-1: ``integral |F_ref - F_cur| dx``; ``wasserstein_norm`` divides by the
  reference's standard deviation (floored at 0.001): Evidently's default numeric drift score.
- PSI on fixed bins: ``sum (c - r) ln(c / r)`` over the reference's quantile bins, each share
  floored at :data:`PSI_EPS` so an empty bin (a new category) counts instead of dividing by 0.
- Jensen-Shannon distance (natural log, scipy's ``jensenshannon``) of the binned shares.
- Chi-square test of homogeneity of the 2 x K table (``scipy.stats.chi2_contingency``
  without Yates' correction).
- Benjamini-Hochberg adjusted p-values (q-values) across all the tests of one window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PSI_EPS = 1e-4  # floor of a bin's share in PSI and the reason a brand-new category scores high
PSI_BINS = 10  # deciles of the reference
EXACT_KS_MAX_N = 10_000  # scipy's MAX_AUTO_N: 'auto' is exact up to this size
STD_FLOOR = 0.001  # Evidently's floor of the reference std in the normed Wasserstein


@dataclass(frozen=True)
class NumericStats:
    """One numeric feature, reference vs current."""

    ks_stat: float
    ks_pvalue: float
    wasserstein: float
    wasserstein_norm: float
    psi: float
    jensenshannon: float
    ref_mean: float
    cur_mean: float


@dataclass(frozen=True)
class CategoricalStats:
    """One categorical feature, reference vs current."""

    psi: float
    chi2: float
    chi2_pvalue: float
    jensenshannon: float
    categories: tuple[str, ...]
    ref_share: tuple[float, ...]
    cur_share: tuple[float, ...]


# -- bins and PSI ---------------------------------------------------------------------------


def quantile_edges(sorted_ref: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Inner bin edges: the reference's quantiles 1/bins .. (bins-1)/bins, duplicates removed.

    Bins are right-closed: bin i holds ``edges[i-1] < x <= edges[i]``; a column with few
    distinct values (token counts, a single value) simply gets fewer bins.
    """
    if sorted_ref.size == 0:
        return np.zeros(0)
    qs = np.arange(1, bins) / bins
    return np.unique(np.quantile(sorted_ref, qs))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per right-closed bin of ``edges`` (len(edges) + 1 bins)."""
    idx = np.searchsorted(edges, values, side="left")
    return np.bincount(idx, minlength=edges.size + 1).astype(np.int64)


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float = PSI_EPS) -> float:
    """Population stability index of two count vectors over the same bins."""
    r = np.maximum(ref_counts / max(int(ref_counts.sum()), 1), eps)
    c = np.maximum(cur_counts / max(int(cur_counts.sum()), 1), eps)
    return float(np.sum((c - r) * np.log(c / r)))


def jensenshannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) of two non-negative vectors, normalised like scipy's."""
    p = np.asarray(p, dtype=np.float64) / np.sum(p)
    q = np.asarray(q, dtype=np.float64) / np.sum(q)
    m = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / m), 0.0)
        right = np.where(q > 0, q * np.log(q / m), 0.0)
    js = (np.sum(left) + np.sum(right)) / 2.0
    return float(np.sqrt(max(js, 0.0)))


# -- KS and Wasserstein on sorted samples ---------------------------------------------------


def _cdf_walk(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(F_ref - F_cur, dx)`` at every point of the merged sorted union (ties: dx = 0).

    The position of each reference value in the merge is its own rank plus the number of
    current values strictly below it, so one ``searchsorted`` of the two sorted arrays
    places everything; cumulative counts then give both empirical CDFs.
    """
    n1, n2 = ref.size, cur.size
    pos_ref = np.arange(n1) + np.searchsorted(cur, ref, side="left")
    is_ref = np.zeros(n1 + n2, dtype=bool)
    is_ref[pos_ref] = True
    merged = np.empty(n1 + n2, dtype=np.float64)
    merged[pos_ref] = ref
    merged[~is_ref] = cur
    cum_ref = np.cumsum(is_ref, dtype=np.int64)
    cum_cur = np.arange(1, n1 + n2 + 1, dtype=np.int64) - cum_ref
    diff = cum_ref[:-1] / n1 - cum_cur[:-1] / n2
    return diff, np.diff(merged)


def _smirnov_sf(n: int, x: float) -> float:
    """One-sided Smirnov ``P(D+_n >= x)``, the exact sum scipy.special.smirnov evaluates.

    ``x * sum_j C(n, j) (j/n + x)^(j-1) (1 - x - j/n)^(n-j)`` for ``j <= n (1 - x)``, in
    log space and vectorised; only the terms within e^-40 of the largest are summed (found
    on a coarse grid first: the terms are smooth and unimodal in j). scipy's scalar C
    loop takes 1-3 s for n = 500,000; this takes ~20 ms, equal to ~1e-9 relative.
    """
    from scipy.special import gammaln

    jmax = int(math.floor(n * (1.0 - x) + 1e-12))
    lgn = float(gammaln(n + 1))

    def log_terms(j: np.ndarray) -> np.ndarray:
        rest = 1.0 - x - j / n
        with np.errstate(divide="ignore"):
            tail = (n - j) * np.log(np.where(rest > 0, rest, 0.0))
        return np.asarray(lgn - gammaln(j + 1) - gammaln(n - j + 1) + (j - 1) * np.log(j / n + x) + tail)

    stride = max(1, jmax // 4000)
    coarse = np.arange(0, jmax + 1, stride, dtype=np.float64)
    lc = log_terms(coarse)
    top = float(lc.max())
    keep = np.nonzero(lc > top - 40.0)[0]
    lo = int(coarse[max(int(keep[0]) - 1, 0)])
    hi = int(coarse[min(int(keep[-1]) + 1, coarse.size - 1)]) if stride > 1 else jmax
    j = np.arange(lo, min(max(hi, lo), jmax) + 1, dtype=np.float64)
    lt = log_terms(j)
    peak = float(lt.max())
    return float(x * math.exp(peak) * np.sum(np.exp(lt - peak)))


def ks_pvalue(d: float, n1: int, n2: int) -> float:
    """scipy's asymptotic two-sided p-value of a two-sample KS statistic (large samples).

    ``kstwo.sf(d, round(n1 n2 / (n1 + n2)))`` as ks_2samp computes it, following scipy's
    own branches (Simard & L'Ecuyer): where scipy evaluates ``2 * smirnov(n, d)`` (small
    p-values of large samples, its slow path) the sum is evaluated by :func:`_smirnov_sf`.
    """
    from scipy.stats import kstwo

    m, n_ = sorted([float(n1), float(n2)], reverse=True)
    n = int(np.round(m * n_ / (m + n_)))
    t = n * d
    nxsquared = t * d
    if n > 140 and 0.0 < d < 0.5 and 1.0 < t < n - 1 and nxsquared >= 2.2:
        if nxsquared >= 370.0:
            return 0.0
        return float(np.clip(2.0 * _smirnov_sf(n, d), 0.0, 1.0))
    return float(np.clip(kstwo.sf(d, n), 0.0, 1.0))


def ks_wasserstein(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> tuple[float, float, float]:
    """(KS statistic, its p-value, Wasserstein-1) of two sorted, finite, non-empty samples."""
    n1, n2 = ref_sorted.size, cur_sorted.size
    if n1 == 0 or n2 == 0:
        raise ValueError("ks_wasserstein needs two non-empty samples")
    diff, dx = _cdf_walk(ref_sorted, cur_sorted)
    absdiff = np.abs(diff)
    wasserstein = float(np.sum(absdiff * dx))
    steps = absdiff[dx > 0]  # the end of each tie group: where both CDFs hold every equal value
    d = float(steps.max()) if steps.size else 0.0
    if max(n1, n2) <= EXACT_KS_MAX_N:
        import warnings

        from scipy.stats import ks_2samp

        with warnings.catch_warnings():  # scipy's own exact -> asymp fallback; the value is still scipy's
            warnings.simplefilter("ignore", RuntimeWarning)
            res = ks_2samp(ref_sorted, cur_sorted)
        return float(res.statistic), float(res.pvalue), wasserstein
    return d, ks_pvalue(d, n1, n2), wasserstein


def numeric_stats(ref_sorted: np.ndarray, edges: np.ndarray, ref_counts: np.ndarray,
                  ref_std: float, cur: np.ndarray) -> NumericStats:
    """Every numeric statistic of one feature; ``cur`` need not be sorted."""
    cur_sorted = np.sort(np.asarray(cur, dtype=np.float64))
    d, p, w = ks_wasserstein(ref_sorted, cur_sorted)
    cur_counts = bin_counts(cur_sorted, edges)
    return NumericStats(
        ks_stat=d, ks_pvalue=p, wasserstein=w, wasserstein_norm=w / max(ref_std, STD_FLOOR),
        psi=psi(ref_counts, cur_counts), jensenshannon=jensenshannon(ref_counts, cur_counts),
        ref_mean=float(ref_sorted.mean()), cur_mean=float(cur_sorted.mean()),
    )


# -- categorical ------------------------------------------------------------------------------


def chi_square(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Chi-square homogeneity test of the 2 x K table; categories empty in both are dropped."""
    table = np.vstack([ref_counts, cur_counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0  # one category in both windows: nothing can differ
    from scipy.stats import chi2_contingency

    res = chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue)


def categorical_stats(ref: dict[str, int], cur: dict[str, int]) -> CategoricalStats:
    """PSI, chi-square and JS over the union of the categories of both windows."""
    cats = tuple(sorted(set(ref) | set(cur)))
    rc = np.array([ref.get(c, 0) for c in cats], dtype=np.int64)
    cc = np.array([cur.get(c, 0) for c in cats], dtype=np.int64)
    chi2, p = chi_square(rc, cc)
    return CategoricalStats(
        psi=psi(rc, cc), chi2=chi2, chi2_pvalue=p, jensenshannon=jensenshannon(rc, cc), categories=cats,
        ref_share=tuple(float(x) for x in rc / max(rc.sum(), 1)),
        cur_share=tuple(float(x) for x in cc / max(cc.sum(), 1)),
    )


def value_counts(values: Sequence[object] | np.ndarray) -> dict[str, int]:
    """Counts per category (None -> "(missing)"), through pyarrow: 1M strings in ~30 ms."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    arr = pc.fill_null(pc.cast(arr, pa.string()), "(missing)")
    vc = pc.value_counts(arr)
    return {str(k): int(n) for k, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(),
                                           strict=True)}


# -- tests across features -----------------------------------------------------------------


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (monotone, capped at 1), in the input order."""
    n = len(pvalues)
    if n == 0:
        return []
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    ranked = p[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adjusted, 1.0)
    return [float(x) for x in out]


def two_proportion_pvalue(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided z-test p-value of two shares (pooled variance); 1.0 when both are 0 or 1."""
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return 1.0
    z = (k2 / n2 - k1 / n1) / math.sqrt(var)
    return math.erfc(abs(z) / math.sqrt(2))


def welch_pvalue(mean1: float, var1: float, n1: int, mean2: float, var2: float, n2: int) -> float:
    """Two-sided Welch t-test p-value from summary statistics (no raw reference needed)."""
    if n1 < 2 or n2 < 2:
        return 1.0
    se2 = var1 / n1 + var2 / n2
    if se2 <= 0:
        return 1.0 if mean1 == mean2 else 0.0
    from scipy.stats import t as student_t

    t = (mean2 - mean1) / math.sqrt(se2)
    dof = se2 ** 2 / ((var1 / n1) ** 2 / (n1 - 1) + (var2 / n2) ** 2 / (n2 - 1))
    return float(2 * student_t.sf(abs(t), dof))
