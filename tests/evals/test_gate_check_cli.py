"""`python -m evals.gate_check` as users call it: exit codes, outputs, no side effects on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def gate_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evals.gate_check", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def write(path: Path, payload: object) -> Path:
    path.write_text(json.dumps(payload) if not isinstance(payload, str) else payload)
    return path


def per_item(quality: list[float], success: list[float]) -> list[dict]:
    return [{"id": f"i{k}", "scores": {"quality_score": q, "task_success_rate": t}, "error": None}
            for k, (q, t) in enumerate(zip(quality, success, strict=True))]


CANDIDATE_ITEMS = per_item([0.93] * 100, [1.0] * 95 + [0.0] * 5)


@pytest.fixture
def quality_results(tmp_path: Path) -> Path:
    return write(tmp_path / "quality.json", {
        "metrics": {"groundedness_score": 0.91, "task_success_rate": 0.95, "hallucination_rate": 0.03,
                    "quality_score": 0.93},
        "samples": CANDIDATE_ITEMS,
        "meta": {"model": "m", "version": "2", "suite": "quality"},
    })


def test_pass_writes_verdict_and_report(tmp_path: Path, quality_results: Path) -> None:
    # the champion answered the same 100 items: quality 0.94 each, the same pass/fail
    baseline = write(tmp_path / "base.json", {"metrics": {"quality_score": 0.94, "task_success_rate": 0.95},
                                              "samples": per_item([0.94] * 100, [1.0] * 95 + [0.0] * 5)})
    out, report = tmp_path / "v" / "verdict.json", tmp_path / "r" / "report.md"
    proc = gate_check("--results", str(quality_results), "--threshold-file", "thresholds/quality.yaml",
                      "--baseline", str(baseline), "--output", str(out), "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    verdict = json.loads(out.read_text())
    assert verdict["passed"] is True and verdict["failed_gates"] == []
    assert verdict["subject"] == "m:2"
    assert len(verdict["thresholds_sha256"]) == 64 and len(verdict["results_sha256"]) == 64
    regression = next(g for g in verdict["gates"] if g["metric"] == "quality_delta_vs_baseline")
    assert abs(regression["value"] - (-0.01)) < 1e-9 and regression["n"] == 100
    assert regression["on"] == "ci_lower" and regression["method"].startswith("paired bootstrap")
    assert "PASSED" in report.read_text()


def test_regression_fails_with_exit_1_naming_the_gate(tmp_path: Path, quality_results: Path) -> None:
    baseline = write(tmp_path / "base.json", {"metrics": {"quality_score": 0.96, "task_success_rate": 0.95},
                                              "samples": per_item([0.96] * 100, [1.0] * 95 + [0.0] * 5)})
    out = tmp_path / "verdict.json"
    proc = gate_check("--results", str(quality_results), "--threshold-file", "thresholds/quality.yaml",
                      "--baseline", str(baseline), "--output", str(out))
    assert proc.returncode == 1
    assert json.loads(out.read_text())["failed_gates"] == ["regression"]
    assert "regression" in proc.stdout


def test_production_verdict_is_reported_beside_and_baseline_established(tmp_path: Path,
                                                                       quality_results: Path) -> None:
    out, report = tmp_path / "verdict.json", tmp_path / "report.md"
    empty = write(tmp_path / "none.json", {"metrics": {}, "meta": {"note": "no champion results for quality"}})
    proc = gate_check("--results", str(quality_results), "--threshold-file", "thresholds/embedded/quality.yaml",
                      "--production-threshold-file", "thresholds/quality.yaml", "--baseline", str(empty),
                      "--output", str(out), "--report", str(report), "--establish-baseline")
    verdict = json.loads(out.read_text())
    regression = next(g for g in verdict["gates"] if g["name"] == "regression")
    assert regression["status"] == "baseline established" and regression["passed"]
    assert verdict["profile"] == "embedded" and "production" in verdict
    assert verdict["production"]["passed"] is False  # production never establishes: it fails closed
    assert "regression" in verdict["production"]["failed_gates"]
    text = report.read_text()
    assert "(embedded profile, deciding)" in text and "(production thresholds, same evidence, not deciding)" in text
    assert proc.returncode == (0 if verdict["passed"] else 1)


def test_missing_metric_fails_closed_exit_1(tmp_path: Path) -> None:
    results = write(tmp_path / "r.json", {"metrics": {"latency_p50_ms": 100, "latency_p95_ms": None}})
    proc = gate_check("--results", str(results), "--threshold-file", "thresholds/latency.yaml")
    assert proc.returncode == 1
    assert "null" in proc.stdout or "fails closed" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda d: ["--results", str(d / "nope.json"), "--threshold-file", "thresholds/quality.yaml"],
         "--results"),
        (lambda d: ["--results", str(write(d / "r.json", "{not json")), "--threshold-file",
                    "thresholds/quality.yaml"], "not valid JSON"),
        (lambda d: ["--results", str(write(d / "r.json", {"metrics": {}})), "--threshold-file",
                    str(write(d / "t.yaml", "gates:\n  a: {metric: x, min: 1, comparison: ge}\n"))],
         "gates.a.comparison"),
        (lambda d: ["--results", str(write(d / "r.json", {"metrics": {}})), "--threshold-file",
                    str(d / "missing.yaml")], "--threshold-file"),
        (lambda d: ["--results", str(write(d / "r.json", [1, 2])), "--threshold-file", "thresholds/quality.yaml"],
         "top level"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_output_file(tmp_path: Path, setup, needle: str) -> None:
    out = tmp_path / "verdict.json"
    proc = gate_check(*setup(tmp_path), "--output", str(out), "--report", str(tmp_path / "r.md"))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0]
    assert not out.exists() and not (tmp_path / "r.md").exists()


def test_unknown_flag_is_exit_2() -> None:
    assert gate_check("--results", "x", "--threshold-file", "y", "--frobnicate").returncode == 2


# -- unknown metrics (evals.catalogue): a typo is bad input, a produced metric a run lacks fails closed --


def test_a_gate_on_a_metric_the_suite_never_produces_is_exit_2_naming_file_and_field(
        tmp_path: Path, quality_results: Path) -> None:
    typo = write(tmp_path / "quality.yaml", (REPO_ROOT / "thresholds" / "quality.yaml").read_text()
                 .replace("metric: groundedness_score", "metric: groundednes_score"))
    out, report = tmp_path / "verdict.json", tmp_path / "report.md"
    proc = gate_check("--results", str(quality_results), "--threshold-file", str(typo), "--output", str(out),
                      "--report", str(report))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert (f"{typo}: gates.groundedness.metric: unknown metric 'groundednes_score' for the quality suite "
            f"(did you mean 'groundedness_score'? known: ") in lines[0]
    assert not out.exists() and not report.exists() and proc.stdout == ""  # no verdict, no report, no table


def test_a_known_metric_the_run_did_not_produce_fails_closed_exit_1(tmp_path: Path) -> None:
    # a broken run: the quality suite writes answer_relevancy, this results file lacks it
    results = write(tmp_path / "q.json", {"metrics": {"task_success_rate": 0.97}, "meta": {"suite": "quality"}})
    gate = write(tmp_path / "gates.yaml", "gates:\n  success: {metric: task_success_rate, min: 0.9}\n"
                                          "  relevant: {metric: answer_relevancy, min: 0.5}\n")
    out = tmp_path / "verdict.json"
    proc = gate_check("--results", str(results), "--threshold-file", str(gate), "--output", str(out))
    assert proc.returncode == 1, proc.stderr
    verdict = json.loads(out.read_text())
    assert verdict["passed"] is False and verdict["failed_gates"] == ["relevant"]
    relevant = next(g for g in verdict["gates"] if g["name"] == "relevant")
    assert relevant["reason"] == "metric answer_relevancy missing from results: fails closed"


def test_derived_names_of_known_bases_are_accepted_and_judged(tmp_path: Path) -> None:
    results = write(tmp_path / "latency.json", {"metrics": {"latency_p95_ms": 900.0, "requests_per_second": 4.0,
                                                            "error_rate": 0.0}, "meta": {"suite": "latency"}})
    champion = write(tmp_path / "champion.json", {"metrics": {"latency_p95_ms": 1000.0, "requests_per_second": 4.0,
                                                              "error_rate": 0.0}})
    gate = write(tmp_path / "latency.yaml", "gates:\n  p95: {metric: latency_p95_ms_ratio_vs_baseline, max: 1.25}\n"
                                            "  errors: {metric: error_rate_delta_vs_baseline, max: 0.01}\n")
    out = tmp_path / "verdict.json"
    assert gate_check("--results", str(results), "--threshold-file", str(gate), "--baseline", str(champion),
                      "--output", str(out)).returncode == 0
    assert {g["metric"]: g["value"] for g in json.loads(out.read_text())["gates"]} == {
        "latency_p95_ms_ratio_vs_baseline": 0.9, "error_rate_delta_vs_baseline": 0.0}
    # without the champion's results the derived names are still known: they fail closed, not exit 2
    proc = gate_check("--results", str(results), "--threshold-file", str(gate), "--output", str(out))
    assert proc.returncode == 1 and "pass --baseline" in json.loads(out.read_text())["gates"][0]["reason"]


def test_the_results_suite_decides_then_the_file_stem_then_nothing(tmp_path: Path, quality_results: Path) -> None:
    # the results say quality: the safety gates are the wrong file, named as such
    proc = gate_check("--results", str(quality_results), "--threshold-file", "thresholds/safety.yaml")
    assert proc.returncode == 2 and "gates.refusal.metric: unknown metric 'refusal_rate' for the quality suite" \
        in proc.stderr
    # no meta.suite: the stem (latency) decides
    bare = write(tmp_path / "r.json", {"metrics": {"error_rate": 0.0}})
    typo = write(tmp_path / "latency.yaml", "gates:\n  errors: {metric: eror_rate, max: 0.01}\n")
    proc = gate_check("--results", str(bare), "--threshold-file", str(typo))
    assert proc.returncode == 2 and "unknown metric 'eror_rate' for the latency suite" in proc.stderr
    # neither names a catalogued suite: nothing to check against, the gate fails closed
    other = write(tmp_path / "custom.yaml", "gates:\n  errors: {metric: eror_rate, max: 0.01}\n")
    proc = gate_check("--results", str(bare), "--threshold-file", str(other))
    assert proc.returncode == 1 and "eror_rate missing from results: fails closed" in proc.stderr


def test_a_typo_in_the_production_threshold_file_is_bad_input_too(tmp_path: Path, quality_results: Path) -> None:
    typo = write(tmp_path / "quality.yaml", (REPO_ROOT / "thresholds" / "quality.yaml").read_text()
                 .replace("metric: hallucination_rate", "metric: halucination_rate"))
    out = tmp_path / "verdict.json"
    proc = gate_check("--results", str(quality_results), "--threshold-file", "thresholds/embedded/quality.yaml",
                      "--production-threshold-file", str(typo), "--output", str(out))
    assert proc.returncode == 2 and f"{typo}: gates.hallucination.metric: unknown metric" in proc.stderr
    assert not out.exists()
