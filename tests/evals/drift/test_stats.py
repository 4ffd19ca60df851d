"""evals.drift.stats against scipy (1e-9) and a PSI written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial import distance

from evals.drift import stats

TOL = 1e-9


def _samples(kind: str, n1: int, n2: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "lognormal":
        return rng.lognormal(4, 0.5, n1), rng.lognormal(4.02, 0.5, n2)
    if kind == "ties":
        return rng.integers(0, 40, n1).astype(float), rng.integers(0, 43, n2).astype(float)
    return np.ones(n1), rng.integers(0, 2, n2).astype(float)  # single-valued reference


@pytest.mark.parametrize(("kind", "n1", "n2"), [("lognormal", 3000, 2000), ("lognormal", 60_000, 40_000),
                                                ("ties", 50_000, 30_000), ("ties", 800, 900),
                                                ("single", 20_000, 15_000), ("lognormal", 200_000, 200_000)])
def test_ks_and_wasserstein_equal_scipy(kind: str, n1: int, n2: int) -> None:
    a, b = _samples(kind, n1, n2, seed=n1 + n2)
    d, p, w = stats.ks_wasserstein(np.sort(a), np.sort(b))
    ref = sps.ks_2samp(a, b)
    assert d == pytest.approx(ref.statistic, abs=TOL)
    assert p == pytest.approx(ref.pvalue, abs=TOL)
    assert w == pytest.approx(sps.wasserstein_distance(a, b), abs=TOL)


@pytest.mark.parametrize("z", [0.4, 1.0, 1.3, 1.6, 2.2, 3.0, 5.0, 9.0, 25.0])
@pytest.mark.parametrize(("n1", "n2"), [(1_000_000, 1_000_000), (40_000, 25_000), (300, 20_000)])
def test_ks_pvalue_equals_scipy_kstwo_on_every_branch(z: float, n1: int, n2: int) -> None:
    n = round(n1 * n2 / (n1 + n2))
    d = z / math.sqrt(n)
    assert stats.ks_pvalue(d, n1, n2) == pytest.approx(float(np.clip(sps.kstwo.sf(d, n), 0, 1)), abs=TOL, rel=1e-8)


def psi_by_hand(ref: list[float], cur: list[float], edges: list[float], eps: float = 1e-4) -> float:
    """PSI = sum over bins of (c - r) * ln(c / r), shares floored at eps, right-closed bins."""
    def shares(values: list[float]) -> list[float]:
        counts = [0] * (len(edges) + 1)
        for v in values:
            i = 0
            while i < len(edges) and v > edges[i]:
                i += 1
            counts[i] += 1
        return [max(c / len(values), eps) for c in counts]

    r, c = shares(ref), shares(cur)
    return sum((ci - ri) * math.log(ci / ri) for ri, ci in zip(r, c, strict=True))


def test_psi_equals_the_formula_on_reference_deciles() -> None:
    rng = np.random.default_rng(7)
    ref, cur = rng.normal(0, 1, 5000), rng.normal(0.3, 1.2, 4000)
    edges = stats.quantile_edges(np.sort(ref))
    assert len(edges) == 9
    expected = [float(np.quantile(ref, q / 10)) for q in range(1, 10)]
    np.testing.assert_allclose(edges, expected, atol=1e-12)
    got = stats.psi(stats.bin_counts(ref, edges), stats.bin_counts(cur, edges))
    assert got == pytest.approx(psi_by_hand(ref.tolist(), cur.tolist(), edges.tolist()), abs=TOL)
    assert got > 0.05
    same = stats.psi(stats.bin_counts(ref, edges), stats.bin_counts(ref, edges))
    assert same == 0.0


def test_psi_counts_a_new_category_and_handles_a_single_value() -> None:
    ref, cur = {"en": 900, "de": 100}, {"en": 855, "de": 95, "pt": 50}
    s = stats.categorical_stats(ref, cur)
    assert s.categories == ("de", "en", "pt")
    by_hand = sum((c - r) * math.log(c / r) for r, c in
                  zip([0.1, 0.9, 1e-4], [0.095, 0.855, 0.05], strict=True))
    assert s.psi == pytest.approx(by_hand, abs=TOL)
    assert s.psi > 0.2
    edges = stats.quantile_edges(np.ones(100))
    assert edges.tolist() == [1.0]
    assert stats.bin_counts(np.array([1.0, 1.0, 2.0]), edges).tolist() == [2, 1]


def test_jensenshannon_and_chi_square_equal_scipy() -> None:
    rc, cc = np.array([500, 300, 150, 50]), np.array([450, 320, 200, 30])
    assert stats.jensenshannon(rc, cc) == pytest.approx(float(distance.jensenshannon(rc, cc)), abs=TOL)
    chi2, p = stats.chi_square(rc, cc)
    ref = sps.chi2_contingency(np.vstack([rc, cc]), correction=False)
    assert chi2 == pytest.approx(ref.statistic, abs=TOL)
    assert p == pytest.approx(ref.pvalue, abs=TOL)
    assert stats.chi_square(np.array([10, 0]), np.array([20, 0])) == (0.0, 1.0)


def test_numeric_stats_normed_wasserstein_is_evidentlys_definition() -> None:
    rng = np.random.default_rng(3)
    ref, cur = rng.gamma(2, 1, 20_000), rng.gamma(2.2, 1, 20_000)
    srt = np.sort(ref)
    edges = stats.quantile_edges(srt)
    s = stats.numeric_stats(srt, edges, stats.bin_counts(srt, edges), float(ref.std()), cur)
    assert s.wasserstein_norm == pytest.approx(sps.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001),
                                               abs=TOL)
    assert s.jensenshannon == pytest.approx(
        float(distance.jensenshannon(stats.bin_counts(ref, edges), stats.bin_counts(cur, edges))), abs=TOL)


def test_benjamini_hochberg_equals_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests

    p = [0.001, 0.04, 0.03, 0.2, 0.011, 0.5, 0.0004]
    np.testing.assert_allclose(stats.benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], atol=1e-12)
    assert stats.benjamini_hochberg([]) == []


def test_welch_and_two_proportion_pvalues_equal_scipy() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 400), rng.normal(0.2, 1.5, 300)
    p = stats.welch_pvalue(a.mean(), a.var(ddof=1), a.size, b.mean(), b.var(ddof=1), b.size)
    assert p == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, abs=TOL)
    from statsmodels.stats.proportion import proportions_ztest

    ref = proportions_ztest([30, 80], [1000, 1000])[1]
    assert stats.two_proportion_pvalue(30, 1000, 80, 1000) == pytest.approx(ref, abs=TOL)
