"""evals.canary.stats: sticky assignment, scoring, Welch/Cohen's d and the verdict, exhaustively."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from evals.canary.stats import (
    CANARY,
    STABLE,
    ArmStats,
    CanaryPolicy,
    Decision,
    assign_arm,
    bucket,
    canary_metrics,
    decide,
    normalize_line,
    order_line_quality,
    welch_test,
)

user_ids = st.text(min_size=1, max_size=40)
weights = st.floats(min_value=0.0, max_value=1.0)
scores = st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=2, max_size=40)
SMALL = CanaryPolicy(min_samples=10)


# -- sticky assignment ---------------------------------------------------------------------


@given(user_ids, weights, st.text(max_size=20))
def test_assignment_is_sticky_and_in_range(user: str, w: float, salt: str) -> None:
    assert 0.0 <= bucket(user, salt) < 1.0
    assert assign_arm(user, w, salt) == assign_arm(user, w, salt)
    assert assign_arm(user, w, salt) in (STABLE, CANARY)


@given(user_ids, weights, weights)
def test_raising_the_weight_never_moves_a_canary_user_back(user: str, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    if assign_arm(user, lo) == CANARY:
        assert assign_arm(user, hi) == CANARY


@given(user_ids)
def test_weight_zero_and_one_are_all_or_nothing(user: str) -> None:
    assert assign_arm(user, 0.0) == STABLE
    assert assign_arm(user, 1.0) == CANARY


@pytest.mark.parametrize("weight", [0.1, 0.3, 0.5])
def test_share_of_users_on_the_canary_matches_the_weight(weight: float) -> None:
    users = [f"user-{i}" for i in range(20000)]
    share = sum(assign_arm(u, weight, "smollm2-orders-canary") == CANARY for u in users) / len(users)
    assert abs(share - weight) < 0.015  # 4+ binomial standard deviations


def test_salt_reshuffles_users_between_deployments() -> None:
    users = [f"user-{i}" for i in range(2000)]
    a = [assign_arm(u, 0.5, "a-canary") for u in users]
    b = [assign_arm(u, 0.5, "b-canary") for u in users]
    agree = sum(x == y for x, y in zip(a, b, strict=True)) / len(users)
    assert 0.4 < agree < 0.6  # independent splits, not the same users every time


@pytest.mark.parametrize("bad", [-0.1, 1.1, math.nan, "0.3"])
def test_weight_out_of_range_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        assign_arm("u", bad)  # type: ignore[arg-type]


# -- per-request quality ---------------------------------------------------------------------


@pytest.mark.parametrize("answer", [
    "1x Large Margarita Pizza", "  1x large margarita pizza. ", '"1x Large Margarita Pizza"',
    "1x   Large Margarita Pizza\nSure, anything else?", "\n\n- 1x Large Margarita Pizza",
])
def test_normalized_exact_match_scores_one(answer: str) -> None:
    assert order_line_quality(answer, "1x Large Margarita Pizza") == 1.0


def test_partial_answers_get_token_f1_credit() -> None:
    assert order_line_quality("2x Large Margarita Pizza", "1x Large Margarita Pizza") == pytest.approx(0.75)
    assert order_line_quality("3 x Large Margarita Pizza", "3x Extra Large Hawaiian Pizza") == pytest.approx(0.4)
    assert order_line_quality("Pizza Pizza", "1x Small Pizza") == pytest.approx(0.4)  # repeats count once
    assert order_line_quality("", "1x Small Pizza") == 0.0
    assert order_line_quality("I cannot help with that", "1x Small Pizza") == 0.0
    assert normalize_line("  Hello   World.\nsecond") == "hello world"


@given(st.text(max_size=60), st.text(max_size=60))
def test_quality_is_a_symmetric_score_in_unit_interval(a: str, b: str) -> None:
    q = order_line_quality(a, b)
    assert 0.0 <= q <= 1.0
    assert q == pytest.approx(order_line_quality(b, a))
    assert order_line_quality(a, a) == 1.0


# -- Welch's t-test and Cohen's d -------------------------------------------------------------


def test_welch_matches_the_textbook_formula() -> None:
    a, b = [0.9, 0.8, 1.0, 0.7, 0.95, 0.85], [0.6, 0.7, 0.65, 0.9, 0.5]
    va, vb = statistics.variance(a), statistics.variance(b)
    t = (statistics.mean(a) - statistics.mean(b)) / math.sqrt(va / len(a) + vb / len(b))
    pooled = math.sqrt(((len(a) - 1) * va + (len(b) - 1) * vb) / (len(a) + len(b) - 2))
    res = welch_test(a, b)
    assert res.t == pytest.approx(t)
    assert res.p_value == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert res.cohens_d == pytest.approx((statistics.mean(a) - statistics.mean(b)) / pooled)
    assert 0.0 < res.p_value < 0.05


def test_cohens_d_of_unit_variance_arms_is_the_mean_difference() -> None:
    assert welch_test([1.0, 2.0, 3.0], [3.0, 4.0, 5.0]).cohens_d == pytest.approx(-2.0)


def test_constant_arms_have_defined_statistics() -> None:
    same = welch_test([1.0] * 5, [1.0] * 7)
    assert (same.t, same.p_value, same.cohens_d) == (0.0, 1.0, 0.0)
    worse = welch_test([0.0] * 5, [1.0] * 5)
    assert worse.p_value == 0.0 and worse.t == -math.inf and worse.cohens_d == -math.inf


@pytest.mark.parametrize(("n_canary", "n_stable"), [(37, 41), (3, 200), (12, 13)])
def test_equal_constant_arms_at_a_bucket_midpoint_are_no_regression(n_canary: int, n_stable: int) -> None:
    # Prometheus-rebuilt scores: every feedback in the same bucket (midpoint 0.05). The float
    # means differ by an ulp; that must not read as a significant drop (it did: p=0.0007, d=-1.05).
    res = welch_test([0.05] * n_canary, [0.05] * n_stable)
    assert (res.t, res.p_value, res.cohens_d) == (0.0, 1.0, 0.0)


@pytest.mark.parametrize(("a", "b"), [([], [1.0, 2.0]), ([1.0], [1.0, 2.0]), ([1.0, 0.0], [0.5])])
def test_too_few_values_give_nan(a: list[float], b: list[float]) -> None:
    res = welch_test(a, b)
    assert math.isnan(res.t) and math.isnan(res.p_value) and math.isnan(res.cohens_d)


@given(scores, scores)
def test_welch_is_antisymmetric(a: list[float], b: list[float]) -> None:
    ab, ba = welch_test(a, b), welch_test(b, a)
    assert ab.p_value == pytest.approx(ba.p_value, nan_ok=True)
    assert ab.t == pytest.approx(-ba.t, nan_ok=True, abs=1e-9)
    assert ab.cohens_d == pytest.approx(-ba.cohens_d, nan_ok=True, abs=1e-9)
    assert math.isnan(ab.p_value) or 0.0 <= ab.p_value <= 1.0


@given(scores, scores, st.floats(min_value=-5, max_value=5))
def test_welch_ignores_a_common_shift(a: list[float], b: list[float], shift: float) -> None:
    if min(statistics.variance(a), statistics.variance(b)) < 1e-6:
        return  # below float resolution after a shift; constant arms are tested on their own
    base, moved = welch_test(a, b), welch_test([x + shift for x in a], [x + shift for x in b])
    assert moved.p_value == pytest.approx(base.p_value, abs=1e-6)
    assert moved.cohens_d == pytest.approx(base.cohens_d, abs=1e-6)


# -- arms and policy -----------------------------------------------------------------------------


def test_arm_stats_refuse_impossible_counts() -> None:
    with pytest.raises(ValueError):
        ArmStats(requests=3, errors=4)
    with pytest.raises(ValueError):
        ArmStats(requests=2, errors=1, quality=(1.0, 1.0))
    assert math.isnan(ArmStats().error_rate) and math.isnan(ArmStats().mean_quality)
    assert ArmStats(requests=4, errors=1, quality=(1.0, 0.5)).error_rate == 0.25


@pytest.mark.parametrize("kwargs", [
    {"quality_min": 1.5}, {"error_rate_max": -0.01}, {"error_rate_delta_max": 2}, {"min_samples": 0},
    {"min_samples": 2.5}, {"alpha": 0.0}, {"alpha": 1.0}, {"min_effect_size": -0.1},
    {"min_effect_size": math.inf},
])
def test_policy_refuses_nonsense_bounds(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CanaryPolicy(**kwargs)  # type: ignore[arg-type]


# -- the verdict ------------------------------------------------------------------------------------


def arm(n: int, errors: int = 0, quality: float | list[float] = 0.9, spread: float = 0.05, seed: int = 0) -> ArmStats:
    """n requests, ``errors`` failed, the rest scored around ``quality`` (deterministic)."""
    rng = random.Random(seed)
    if isinstance(quality, list):
        q = tuple(quality)
    else:
        q = tuple(min(1.0, max(0.0, rng.gauss(quality, spread))) for _ in range(n - errors))
    return ArmStats(requests=n, errors=errors, quality=q)


def test_healthy_canary_is_promoted() -> None:
    v = decide(arm(200, seed=1), arm(200, seed=2), SMALL)
    assert v.decision is Decision.PROMOTE and v.promote and v.action == "promote"
    assert v.metrics["canary_significant_quality_regression"] == 0.0
    assert v.metrics["canary_min_arm_samples"] == 200.0


def test_error_rate_above_the_bound_rolls_back() -> None:
    v = decide(arm(200, errors=4), arm(100, errors=3), CanaryPolicy(min_samples=10, error_rate_delta_max=1.0))
    assert v.decision is Decision.ROLLBACK and v.action == "rollback"
    assert v.metrics["canary_error_rate"] == pytest.approx(0.03)
    assert any("error rate 3.00% > 2.00%" in r for r in v.reasons)


def test_error_rate_worse_than_stable_rolls_back_even_under_the_absolute_bound() -> None:
    v = decide(arm(400, errors=0), arm(200, errors=3), SMALL)  # 1.5% <= 2%, but +1.5 points vs stable
    assert v.decision is Decision.ROLLBACK
    assert v.metrics["canary_error_rate_delta"] == pytest.approx(0.015)
    assert any("exceeds stable" in r for r in v.reasons)


def test_quality_below_the_bound_rolls_back() -> None:
    v = decide(arm(100, quality=0.8), arm(100, quality=0.8, seed=3), SMALL)
    assert v.decision is Decision.ROLLBACK
    assert any("quality" in r and "< 0.850" in r for r in v.reasons)


def test_significant_regression_above_the_bar_rolls_back() -> None:
    v = decide(arm(2000, quality=0.96, seed=1), arm(2000, quality=0.90, seed=2), SMALL)
    assert v.metrics["canary_quality"] > 0.85  # the absolute bar alone would promote
    assert v.metrics["quality_p_value"] < 0.05 and v.metrics["quality_cohens_d"] < -0.2
    assert v.metrics["canary_significant_quality_regression"] == 1.0
    assert v.decision is Decision.ROLLBACK
    assert any("significantly below stable" in r for r in v.reasons)


def test_tiny_significant_difference_is_not_a_regression() -> None:
    # Huge samples make a 0.005 drop significant; Cohen's d says it does not matter.
    v = decide(arm(20000, quality=0.950, spread=0.05, seed=1), arm(20000, quality=0.945, spread=0.05, seed=2), SMALL)
    assert v.metrics["quality_p_value"] < 0.05 and abs(v.metrics["quality_cohens_d"]) < 0.2
    assert v.decision is Decision.PROMOTE


def test_better_canary_is_not_a_regression() -> None:
    v = decide(arm(500, quality=0.86, seed=1), arm(500, quality=0.95, seed=2), SMALL)
    assert v.metrics["quality_p_value"] < 0.05 and v.metrics["canary_quality_delta"] > 0
    assert v.decision is Decision.PROMOTE


def test_too_few_samples_is_inconclusive_and_fails_closed() -> None:
    v = decide(arm(50, seed=1), arm(9, seed=2), SMALL)
    assert v.decision is Decision.INCONCLUSIVE and not v.promote and v.action == "rollback"
    assert any("only 9 requests" in r and "need 10" in r for r in v.reasons)


@pytest.mark.parametrize(("stable", "canary", "why"), [
    (ArmStats(), arm(50), "no requests"),
    (arm(50), ArmStats(), "no requests"),
    (arm(50), ArmStats(requests=50, errors=0, quality=()), "quality cannot be measured"),
    (arm(50), arm(50, quality=[0.95]), "no significance test"),
])
def test_unmeasurable_arms_are_inconclusive(stable: ArmStats, canary: ArmStats, why: str) -> None:
    v = decide(stable, canary, SMALL)
    assert v.decision in (Decision.INCONCLUSIVE, Decision.ROLLBACK) and not v.promote
    assert any(why in r for r in v.reasons)


def test_a_broken_bound_outranks_too_few_samples() -> None:
    v = decide(arm(5), arm(5, errors=5), SMALL)
    assert v.decision is Decision.ROLLBACK
    assert any("error rate" in r for r in v.reasons) and any("need 10" in r for r in v.reasons)


@st.composite
def arms(draw: st.DrawFn) -> ArmStats:
    n = draw(st.integers(min_value=0, max_value=60))
    errors = draw(st.integers(min_value=0, max_value=n))
    q = draw(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=0, max_size=n - errors))
    return ArmStats(requests=n, errors=errors, quality=tuple(q))


policies = st.builds(
    CanaryPolicy,
    quality_min=st.floats(min_value=0.0, max_value=1.0),
    error_rate_max=st.floats(min_value=0.0, max_value=1.0),
    error_rate_delta_max=st.floats(min_value=0.0, max_value=1.0),
    min_samples=st.integers(min_value=1, max_value=60),
    alpha=st.floats(min_value=0.001, max_value=0.5),
    min_effect_size=st.floats(min_value=0.0, max_value=2.0),
)


@settings(max_examples=300, deadline=None)
@given(arms(), arms(), policies)
def test_promote_implies_every_bound_holds(stable: ArmStats, canary: ArmStats, policy: CanaryPolicy) -> None:
    v = decide(stable, canary, policy)
    m = v.metrics
    assert set(m) == set(canary_metrics(stable, canary, policy))
    assert all(isinstance(x, float) for x in m.values())
    assert v.reasons
    if v.promote:
        assert m["canary_error_rate"] <= policy.error_rate_max
        assert m["canary_error_rate_delta"] <= policy.error_rate_delta_max
        assert m["canary_quality"] >= policy.quality_min
        assert m["canary_significant_quality_regression"] == 0.0
        assert m["canary_min_arm_samples"] >= policy.min_samples
        assert not any(math.isnan(m[k]) for k in ("canary_quality", "canary_error_rate", "quality_p_value"))
    else:
        assert v.action == "rollback"


@settings(max_examples=100, deadline=None)
@given(arms(), arms(), policies)
def test_decide_is_deterministic(stable: ArmStats, canary: ArmStats, policy: CanaryPolicy) -> None:
    a, b = decide(stable, canary, policy), decide(stable, canary, policy)
    assert a.decision == b.decision and a.reasons == b.reasons
