"""Paired comparisons, intervals on every gate, the planner: checked against the libraries and textbooks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from evals import gates, paired, plan
from evals._cli import run_main

# fixed data: 60 items, the candidate wins 4 and loses 11 of the discordant pairs
CHAMPION = [1.0] * 30 + [0.0] * 15 + [1.0] * 11 + [0.0] * 4
CANDIDATE = [1.0] * 30 + [0.0] * 15 + [0.0] * 11 + [1.0] * 4


def test_mcnemar_equals_statsmodels_and_its_interval_is_the_exact_binomial_one() -> None:
    from statsmodels.stats.contingency_tables import mcnemar

    r = paired.mcnemar_paired(CANDIDATE, CHAMPION)
    assert r.n == 60 and r.discordant == 15
    assert r.value == pytest.approx((4 - 11) / 60)
    assert r.p_value == pytest.approx(mcnemar([[30, 4], [11, 15]], exact=True).pvalue, rel=1e-12)
    assert r.p_value == pytest.approx(stats.binomtest(4, 15, 0.5).pvalue, rel=1e-12)  # the exact test it is
    ci = stats.binomtest(4, 15).proportion_ci(confidence_level=0.95, method="exact")  # scipy's Clopper-Pearson
    assert r.ci_low == pytest.approx(15 / 60 * (2 * ci.low - 1), rel=1e-9)
    assert r.ci_high == pytest.approx(15 / 60 * (2 * ci.high - 1), rel=1e-9)
    assert r.method.startswith("McNemar exact")


def test_no_discordant_pairs_is_a_zero_difference() -> None:
    r = paired.mcnemar_paired([1.0, 0.0, 1.0], [1.0, 0.0, 1.0])
    assert (r.value, r.ci_low, r.ci_high, r.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_bootstrap_equals_scipy_on_fixed_data() -> None:
    rng = np.random.default_rng(7)
    champ = rng.random(40)
    cand = champ + rng.normal(-0.03, 0.05, 40)
    r = paired.paired_bootstrap(list(cand), list(champ), seed=123)
    ref = stats.bootstrap((cand, champ), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True,
                          vectorized=True, n_resamples=10_000, confidence_level=0.95, method="percentile",
                          rng=np.random.default_rng(123))
    assert r.ci_low == pytest.approx(ref.confidence_interval.low, rel=1e-12)
    assert r.ci_high == pytest.approx(ref.confidence_interval.high, rel=1e-12)
    assert r.value == pytest.approx(float(np.mean(cand - champ)))
    assert "10000 resamples" in r.method
    again = paired.paired_bootstrap(list(cand), list(champ), seed=123)
    assert (again.ci_low, again.ci_high) == (r.ci_low, r.ci_high)  # seeded: reproducible


def _samples(metric: str, values: list[float], prefix: str = "") -> list[dict]:
    return [{"id": f"{prefix}{i}", "scores": {metric: v}, "error": None} for i, v in enumerate(values)]


def _results(values: list[float], metric: str = "task_success_rate", sha: str = "d1") -> dict:
    return {"metrics": {metric: sum(values) / len(values)}, "samples": _samples(metric, values),
            "meta": {"dataset_sha256": sha}}


def test_regression_gate_rests_on_the_paired_difference_with_n_ci_and_method() -> None:
    tf = gates.parse_threshold_text("gates:\n  r: {metric: task_success_rate_delta_vs_baseline, min: -0.2}\n", "t")
    g = gates.evaluate(tf, _results(CANDIDATE), _results(CHAMPION)).gates[0]
    assert g.n == 60 and g.value == pytest.approx(-7 / 60)
    assert g.ci_low is not None and g.ci_low < g.value < g.ci_high
    assert g.method.startswith("McNemar exact") and g.p_value is not None
    assert g.delta_vs_baseline == g.value and (g.delta_ci_low, g.delta_ci_high) == (g.ci_low, g.ci_high)


def test_a_gate_can_decide_on_ci_lower() -> None:
    text = "gates:\n  r: {metric: task_success_rate_delta_vs_baseline, min: -0.2, on: %s}\n"
    cand, champ = _results(CANDIDATE), _results(CHAMPION)
    on_value = gates.evaluate(gates.parse_threshold_text(text % "value", "t"), cand, champ).gates[0]
    on_lower = gates.evaluate(gates.parse_threshold_text(text % "ci_lower", "t"), cand, champ).gates[0]
    assert on_value.passed and on_value.judged_value == on_value.value  # -0.117 >= -0.2
    assert not on_lower.passed and on_lower.judged_value == on_lower.ci_low < -0.2  # the interval reaches below
    assert "ci lower" in on_lower.reason
    # an absolute gate on its Wilson interval's lower bound
    tf = gates.parse_threshold_text("gates:\n  s: {metric: task_success_rate, min: 0.5, on: ci_lower}\n", "t")
    res = _results([1.0] * 12 + [0.0] * 8)
    res["metrics"].update({"task_success_rate_ci_low": 0.39, "task_success_rate_ci_high": 0.78,
                           "task_success_rate_n": 20.0})
    g = gates.evaluate(tf, res).gates[0]
    assert not g.passed and g.n == 20 and g.judged_value == 0.39 and g.method == "Wilson 95 %"


def test_on_rejects_unknown_values_and_goes_not_with_confidence() -> None:
    with pytest.raises(gates.BadInput, match=r"gates.r.on: 'mean'"):
        gates.parse_threshold_text("gates:\n  r: {metric: x, min: 0, on: mean}\n", "t.yaml")
    with pytest.raises(gates.BadInput, match="do not go together"):
        gates.parse_threshold_text("gates:\n  r: {metric: x, min: 0, on: ci_lower, confidence: 0.9}\n", "t.yaml")


def test_different_datasets_cannot_be_paired_and_fail_closed() -> None:
    tf = gates.parse_threshold_text("gates:\n  r: {metric: task_success_rate_delta_vs_baseline, min: -0.2}\n", "t")
    g = gates.evaluate(tf, _results(CANDIDATE, sha="new"), _results(CHAMPION, sha="old")).gates[0]
    assert not g.passed and "not the same items" in g.reason and "fails closed" in g.reason
    stale = _results(CHAMPION)
    stale["meta"]["pairing_stale"] = "the champion's prompt changed since its answers were recorded"
    g = gates.evaluate(tf, _results(CANDIDATE), stale).gates[0]
    assert not g.passed and "prompt changed" in g.reason


def test_the_report_says_when_the_dataset_is_too_small_for_the_named_regression() -> None:
    tf = gates.parse_threshold_text(
        "gates:\n  r: {metric: task_success_rate_delta_vs_baseline, min: 0, on: ci_upper, mde: 0.02}\n", "t")
    verdict = gates.evaluate(tf, _results(CANDIDATE), _results(CHAMPION))
    note = verdict.gates[0].notes[0]
    assert "dataset too small: 60 paired items" in note and "python -m evals.plan" in note
    assert "dataset too small" in gates.markdown_report(verdict, "q")


PRODUCTION_WITHOUT_JUDGE = {
    "metrics": {"groundedness_score": None, "hallucination_rate": None, "task_success_rate": 0.95,
                "quality_score": 0.9},
    "not_judged": {"groundedness_score": "no independent judge configured",
                   "hallucination_rate": "no independent judge configured"},
}


def test_production_gates_fail_closed_without_a_judge() -> None:
    tf = gates.load_threshold_file("thresholds/quality.yaml")
    verdict = gates.evaluate(tf, PRODUCTION_WITHOUT_JUDGE, {"metrics": {"quality_score": 0.9,
                                                                        "task_success_rate": 0.95}})
    by = {g.metric: g for g in verdict.gates}
    assert not verdict.passed
    for metric in ("groundedness_score", "hallucination_rate"):
        assert not by[metric].passed and by[metric].status == "not judged"
        assert "not judged (no independent judge configured): fails closed" in by[metric].reason
    assert "**FAIL** (not judged)" in gates.markdown_report(verdict, "production")


def test_embedded_profile_is_judge_free() -> None:
    tf = gates.load_threshold_file("thresholds/embedded/quality.yaml")
    judge_metrics = {"groundedness_score", "hallucination_rate", "answer_relevancy", "judge_error_rate"}
    assert not judge_metrics & {g.metric for g in tf.gates}
    assert {"task_success_rate", "exact_match_rate_delta_vs_baseline", "token_f1", "token_f1_delta_vs_baseline",
            "embedding_groundedness"} <= {g.metric for g in tf.gates}


def test_baseline_established_only_when_allowed() -> None:
    tf = gates.parse_threshold_text("gates:\n  r: {metric: quality_delta_vs_baseline, min: -0.05}\n", "t")
    results = {"metrics": {"quality_score": 0.6}, "samples": _samples("quality_score", [0.6])}
    empty = {"metrics": {}, "meta": {"note": "no champion results for quality"}}
    refused = gates.evaluate(tf, results, empty)
    assert not refused.passed and "fails closed" in refused.gates[0].reason
    first = gates.evaluate(tf, results, empty, establish_baseline=True)
    assert first.passed and first.gates[0].status == "baseline established"
    assert "Baseline established" in gates.markdown_report(first, "q")
    marked = {"metrics": {}, "meta": {"establishes_baseline": True}}
    assert gates.evaluate(tf, results, marked).gates[0].status == "baseline established"
    # a champion that has a measurement is compared with, never skipped
    base = {"metrics": {"quality_score": 0.9}, "samples": _samples("quality_score", [0.9])}
    assert not gates.evaluate(tf, results, base, establish_baseline=True).passed


# -- the planner ------------------------------------------------------------------------

Z = stats.norm.ppf


def test_unpaired_n_matches_the_textbook_formula() -> None:
    p0, mde, alpha, power = 0.62, 0.02, 0.05, 0.95
    h = 2 * math.asin(math.sqrt(p0)) - 2 * math.asin(math.sqrt(p0 - mde))
    # arcsine transform: Var(2 asin sqrt(p_hat)) = 1/n per arm, so the difference has 2/n
    textbook = 2 * ((Z(1 - alpha / 2) + Z(power)) / h) ** 2
    assert paired.unpaired_n(p0, mde, alpha=alpha, power=power) == math.ceil(textbook)


@pytest.mark.parametrize(("mde", "psi"), [(0.02, 0.02), (0.02, 0.08), (0.05, 0.2)])
def test_paired_n_matches_the_textbook_formula(mde: float, psi: float) -> None:
    alpha, power = 0.05, 0.95
    sd = paired.binary_difference_sd(mde, psi)
    assert sd == pytest.approx(math.sqrt(psi - mde ** 2))
    z = ((Z(1 - alpha / 2) + Z(power)) * sd / mde) ** 2
    textbook = z + Z(1 - alpha / 2) ** 2 / 2  # one-sample t on the differences, Guenther's (1981) correction
    assert abs(paired.paired_n(mde, sd, alpha=alpha, power=power) - textbook) <= 1.5


def test_plan_cli_prints_paired_and_unpaired_n(tmp_path, capsys) -> None:
    run = tmp_path / "champion.json"
    run.write_text(json.dumps(_results([1.0] * 98 + [0.0] * 60)))
    assert run_main(plan.main, ["--metric", "task_success", "--mde", "0.02", "--power", "0.95", "--alpha", "0.05",
                                "--results", str(run)]) == 0
    out = capsys.readouterr().out
    assert "unpaired: " in out and "paired:   " in out and "TOO SMALL" in out
    assert run_main(plan.main, ["--metric", "task_success", "--mde", "0.02", "--results", str(run), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["paired_n"] == paired.paired_n(0.02, paired.binary_difference_sd(0.02, 0.02), alpha=0.05, power=0.8)
    assert doc["items"] == 158 and doc["enough_paired"] is False


def test_plan_cli_bad_input_exits_2(tmp_path, capsys) -> None:
    run = tmp_path / "champion.json"
    run.write_text(json.dumps(_results([1.0, 0.0])))
    assert run_main(plan.main, ["--metric", "token_f1", "--mde", "0.02", "--results", str(run)]) == 2
    assert "no per-item token_f1" in capsys.readouterr().err
    assert run_main(plan.main, ["--metric", "task_success", "--mde", "2", "--results", str(run)]) == 2
