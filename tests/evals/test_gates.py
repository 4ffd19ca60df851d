"""The gate engine: comparisons, fail-closed rules and threshold-file validation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evals import gates
from evals.errors import BadInput

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9)
not_a_number = st.one_of(
    st.none(), st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")),
    st.booleans(), st.text(max_size=5), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


def one_gate(metric: str = "m", **spec: object) -> gates.ThresholdFile:
    body = {"metric": metric, **spec}
    lines = ["gates:", "  g:"] + [f"    {k}: {v!r}" if isinstance(v, str) else f"    {k}: {v}" for k, v in body.items()]
    return gates.parse_threshold_text("\n".join(lines) + "\n", "t.yaml")


@given(value=finite, bound=finite)
def test_comparisons_match_python_operators(value: float, bound: float) -> None:
    expected = {"gte": value >= bound, "gt": value > bound, "lte": value <= bound, "lt": value < bound}
    for comparison, want in expected.items():
        key = "min" if comparison in ("gte", "gt") else "max"
        tf = gates.ThresholdFile("t", (gates.Gate("g", "m", bound, comparison),))
        verdict = gates.evaluate(tf, {"metrics": {"m": value}})
        assert verdict.passed is want, (comparison, key, value, bound)
        assert verdict.gates[0].value == value


@given(bad=not_a_number, comparison=st.sampled_from(sorted(gates.COMPARISONS)), bound=finite)
def test_non_numbers_fail_closed(bad: object, comparison: str, bound: float) -> None:
    tf = gates.ThresholdFile("t", (gates.Gate("g", "m", bound, comparison),))
    verdict = gates.evaluate(tf, {"metrics": {"m": bad}})
    assert verdict.passed is False
    assert "fails closed" in verdict.gates[0].reason
    assert verdict.gates[0].value is None


@given(comparison=st.sampled_from(sorted(gates.COMPARISONS)), bound=finite)
def test_missing_metric_fails_closed(comparison: str, bound: float) -> None:
    tf = gates.ThresholdFile("t", (gates.Gate("g", "m", bound, comparison),))
    verdict = gates.evaluate(tf, {"metrics": {"other": 1.0}})
    assert not verdict.passed
    assert "missing" in verdict.gates[0].reason


def test_one_failing_gate_fails_the_verdict_and_is_named() -> None:
    tf = gates.parse_threshold_text(
        "gates:\n  a: {metric: x, min: 0.5}\n  b: {metric: y, max: 0.1}\n", "t.yaml")
    verdict = gates.evaluate(tf, {"metrics": {"x": 0.9, "y": 0.2}})
    assert not verdict.passed
    assert [g.name for g in verdict.failed] == ["b"]
    assert "0.2 <= 0.1 is false" in verdict.failed[0].reason


def test_default_comparison_follows_bound_key() -> None:
    tf = gates.parse_threshold_text("gates:\n  a: {metric: x, min: 1}\n  b: {metric: y, max: 2}\n", "t.yaml")
    assert [g.comparison for g in tf.gates] == ["gte", "lte"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("gates: {}\n", "'gates' must be a non-empty mapping"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("gates:\n  a: {metric: x, min: 1}\nextra: 1\n", "unknown key 'extra'"),
        ("gates:\n  a: {metric: x, min: 1, colour: red}\n", "gates.a.colour: unknown key"),
        ("gates:\n  a: {metric: x, min: 1, comparison: ge}\n", "gates.a.comparison: unknown comparison 'ge'"),
        ("gates:\n  a: {metric: x, min: 1, comparison: lte}\n", "does not go with 'min'"),
        ("gates:\n  a: {metric: x, min: 1, max: 2}\n", "exactly one of 'min' or 'max' (both given)"),
        ("gates:\n  a: {metric: x}\n", "exactly one of 'min' or 'max' (neither given)"),
        ("gates:\n  a: {metric: x, min: high}\n", "gates.a.min: bound 'high' is not a finite number"),
        ("gates:\n  a: {metric: x, min: .nan}\n", "gates.a.min: bound nan is not a finite number"),
        ("gates:\n  a: {metric: x, min: true}\n", "gates.a.min: bound True"),
        ("gates:\n  a: {min: 1}\n", "gates.a.metric: required"),
        ("gates:\n  a: 3\n", "gates.a: must be a mapping"),
        ("gates:\n  a: {metric: x, min: 1, confidence: 1.5}\n", "gates.a.confidence"),
        ("gates:\n  a: {metric: x, min: 1}\n  a: {metric: y, min: 1}\n", "duplicate key 'a'"),
        ("gates: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_threshold_files_name_the_file_and_key(text: str, needle: str) -> None:
    with pytest.raises(BadInput) as exc:
        gates.parse_threshold_text(text, "thresholds/x.yaml")
    message = str(exc.value)
    assert message.startswith("thresholds/x.yaml:")
    assert needle in message
    assert "\n" not in message


def test_shipped_threshold_files_parse_with_the_anchor_values() -> None:
    quality = {g.metric: g for g in gates.load_threshold_file("thresholds/quality.yaml").gates}
    assert quality["groundedness_score"].bound == 0.85 and quality["groundedness_score"].comparison == "gte"
    assert quality["task_success_rate"].bound == 0.90
    assert quality["hallucination_rate"].bound == 0.08 and quality["hallucination_rate"].comparison == "lte"
    assert quality["quality_delta_vs_baseline"].bound == -0.02
    latency = {g.metric: g.bound for g in gates.load_threshold_file("thresholds/latency.yaml").gates}
    assert latency["latency_p50_ms"] == 800 and latency["latency_p95_ms"] == 2000
    assert latency["latency_p99_ms"] == 5000 and latency["requests_per_second"] == 50
    assert gates.load_threshold_file("thresholds/safety.yaml").gates


def test_baseline_deltas_are_absolute_points() -> None:
    tf = gates.parse_threshold_text("gates:\n  r: {metric: quality_score_delta_vs_baseline, min: -0.02}\n", "t")
    base = {"metrics": {"quality_score": 0.90}}
    assert gates.evaluate(tf, {"metrics": {"quality_score": 0.885}}, base).passed
    failed = gates.evaluate(tf, {"metrics": {"quality_score": 0.87}}, base)
    assert not failed.passed
    assert math.isclose(failed.gates[0].value, -0.03, abs_tol=1e-12)


def test_delta_without_baseline_fails_closed_with_a_hint() -> None:
    tf = gates.parse_threshold_text("gates:\n  r: {metric: quality_delta_vs_baseline, min: -0.02}\n", "t")
    verdict = gates.evaluate(tf, {"metrics": {"quality": 0.9}})
    assert not verdict.passed and "--baseline" in verdict.gates[0].reason


def test_carried_delta_is_used_and_explicit_baseline_wins() -> None:
    tf = gates.parse_threshold_text("gates:\n  r: {metric: quality_delta_vs_baseline, min: -0.02}\n", "t")
    carried = {"metrics": {"quality": 0.5, "quality_delta_vs_baseline": 0.0}}
    assert gates.evaluate(tf, carried).passed
    assert not gates.evaluate(tf, carried, {"metrics": {"quality": 0.9}}).passed


@given(a=finite, b=finite)
def test_derive_deltas_only_for_numbers_in_both(a: float, b: float) -> None:
    deltas = gates.derive_deltas({"x": a, "y": "n/a", "z": a, "q_score": a}, {"x": b, "y": 1.0, "q_score": b})
    expected = {"x_delta_vs_baseline": a - b, "q_score_delta_vs_baseline": a - b, "q_delta_vs_baseline": a - b}
    if b > 0:  # ratios only against a positive baseline
        expected |= {"x_ratio_vs_baseline": a / b, "q_score_ratio_vs_baseline": a / b}
    assert deltas == expected


RATIO_GATES = """
gates:
  p95:
    metric: latency_p95_ms_ratio_vs_baseline
    max: 1.25
  throughput:
    metric: requests_per_second_ratio_vs_baseline
    min: 0.8
"""


@pytest.mark.parametrize(("p95", "rps", "passed"), [
    (1200.0, 10.0, True),     # same speed as the champion
    (1500.0, 8.0, True),      # exactly at both bounds
    (1501.0, 10.0, False),    # p95 more than 1.25x the champion's
    (1200.0, 7.9, False),     # below 0.8x the champion's throughput
])
def test_ratio_gates_judge_speed_against_the_champion(p95: float, rps: float, passed: bool) -> None:
    tf = gates.parse_threshold_text(RATIO_GATES, "latency.yaml")
    champion = {"metrics": {"latency_p95_ms": 1200.0, "requests_per_second": 10.0}}
    verdict = gates.evaluate(tf, {"metrics": {"latency_p95_ms": p95, "requests_per_second": rps}}, champion)
    assert verdict.passed is passed
    assert {g.name: g.baseline_value for g in verdict.gates} == {"p95": 1200.0, "throughput": 10.0}


def test_ratio_gates_without_a_champion_measurement_say_so_and_fail_closed() -> None:
    tf = gates.parse_threshold_text(RATIO_GATES, "latency.yaml")
    results = {"metrics": {"latency_p95_ms": 900.0, "requests_per_second": 12.0}}
    empty = {"metrics": {}, "meta": {"note": "no champion results for latency"}}
    verdict = gates.evaluate(tf, results, empty)
    assert not verdict.passed
    for g in verdict.gates:
        assert "no baseline measurement of" in g.reason and "no champion results for latency" in g.reason
        assert "fails closed" in g.reason
    report = gates.markdown_report(verdict, "latency")
    assert "no baseline measurement of latency_p95_ms" in report
    # a zero baseline gives no ratio either: nothing to compare against, not a pass
    zero = gates.evaluate(tf, results, {"metrics": {"latency_p95_ms": 0.0, "requests_per_second": 0.0}})
    assert not zero.passed and all("nothing to compare against" in g.reason for g in zero.gates)


def samples(metric: str, values: list[float]) -> list[dict[str, object]]:
    return [{"id": str(i), "scores": {metric: v}, "error": None} for i, v in enumerate(values)]


def test_confidence_bound_is_stricter_than_the_mean() -> None:
    tf = gates.parse_threshold_text("gates:\n  a: {metric: s, min: 0.8, confidence: 0.95}\n", "t")
    values = [1.0] * 17 + [0.0] * 3  # mean 0.85 on 20 samples: not enough evidence for >= 0.8
    results = {"metrics": {"s": 0.85}, "samples": samples("s", values)}
    verdict = gates.evaluate(tf, results)
    assert not verdict.passed
    assert verdict.gates[0].judged_value < 0.8 < verdict.gates[0].value
    many = {"metrics": {"s": 0.85}, "samples": samples("s", [1.0] * 850 + [0.0] * 150)}
    assert gates.evaluate(tf, many).passed


def test_confidence_upper_bound_for_max_gates() -> None:
    tf = gates.parse_threshold_text("gates:\n  a: {metric: h, max: 0.1, confidence: 0.95}\n", "t")
    results = {"metrics": {"h": 0.05}, "samples": samples("h", [0.0] * 19 + [1.0])}
    verdict = gates.evaluate(tf, results)
    assert verdict.gates[0].judged_value > 0.05
    assert not verdict.passed


def test_confidence_without_samples_fails_closed() -> None:
    tf = gates.parse_threshold_text("gates:\n  a: {metric: s, min: 0.1, confidence: 0.95}\n", "t")
    verdict = gates.evaluate(tf, {"metrics": {"s": 0.99}})
    assert not verdict.passed and "per-sample" in verdict.gates[0].reason


def test_confidence_on_a_delta_decides_on_the_paired_interval() -> None:
    tf = gates.parse_threshold_text(
        "gates:\n  r: {metric: q_delta_vs_baseline, min: -0.02, confidence: 0.95}\n", "t")
    base = {"metrics": {"q": 0.9}, "samples": samples("q", [1.0] * 90 + [0.0] * 10)}
    same = {"metrics": {"q": 0.9}, "samples": samples("q", [1.0] * 90 + [0.0] * 10)}
    verdict = gates.evaluate(tf, same, base)
    # the same answers on the same items: no discordant pair, the paired difference is exactly 0
    assert verdict.gates[0].value == 0.0 and verdict.passed and verdict.gates[0].n == 100
    worse = {"metrics": {"q": 0.8}, "samples": samples("q", [1.0] * 80 + [0.0] * 20)}
    failed = gates.evaluate(tf, worse, base).gates[0]
    assert not failed.passed and failed.judged_value == failed.ci_low < -0.02
    assert failed.method.startswith("McNemar exact")


def test_errored_samples_do_not_count_as_scores() -> None:
    results = {"samples": [{"id": "a", "scores": {"s": 1.0}, "error": None},
                           {"id": "b", "scores": {"s": 0.0}, "error": "judge unparseable"}]}
    assert gates.per_sample_values(results, "s") == [1.0]


def test_markdown_report_shows_each_gate_value_bound_and_delta() -> None:
    tf = gates.parse_threshold_text("gates:\n  a: {metric: x, min: 0.5}\n  b: {metric: y, max: 0.1}\n", "t")
    verdict = gates.evaluate(tf, {"metrics": {"x": 0.9, "y": 0.2}}, {"metrics": {"x": 0.8}})
    report = gates.markdown_report(verdict, "quality gates for m:2")
    assert "FAILED (1 of 2 gates)" in report
    assert "| a | `x` | — | 0.9 | — | >= 0.5 | value | +0.1 | point value (no per-item data) | pass |" in report
    assert "| b | `y` | — | 0.2 | — | <= 0.1 | value | — | point value (no per-item data) | **FAIL** |" in report
