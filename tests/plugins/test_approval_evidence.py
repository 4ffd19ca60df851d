"""The approval page's evidence (tollgate.promotion.record_evidence) from real gate_check outputs.

No model server: the results files are written here, judged by evals.gate_check as the gate
pods judge them (deciding profile + production beside), logged to the session's MLflow.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import httpx
import pytest

from evals import gate_check
from evals.contract import SUITES, RunFolder
from tollgate import promotion
from tollgate.mlflow import registry

TASKS = ("factual", "grounded", "order_normalization")


def quality(success: list[float], latency: float) -> dict:
    samples = [{"id": f"q{i}", "task": TASKS[i % 3], "error": None, "latency_ms": latency + i,
                "scores": {"task_success_rate": s, "exact_match_rate": s, "token_f1": 0.5 + s / 4,
                           "embedding_groundedness": 0.6, "quality_score": 0.4 + s / 2}}
               for i, s in enumerate(success)]
    n = len(success)
    rate = sum(success) / n
    return {"metrics": {"task_success_rate": rate, "exact_match_rate": rate, "token_f1": 0.5 + rate / 4,
                        "embedding_groundedness": 0.6, "quality_score": 0.4 + rate / 2, "error_rate": 0.0,
                        "samples_total": float(n), "groundedness_score": None, "hallucination_rate": None},
            "not_judged": {"groundedness_score": "no independent judge configured",
                           "hallucination_rate": "no independent judge configured"},
            "samples": samples,
            "meta": {"model": "m", "version": "2", "suite": "quality", "dataset_sha256": "d" * 64,
                     "judge": {"judged": False, "reason": "no independent judge configured"}}}


def latency(base_ms: float) -> dict:
    return {"metrics": {"latency_p95_ms": base_ms * 1.5, "requests_per_second": 4.0, "error_rate": 0.0,
                        "requests_total": 40.0},
            "samples": [{"id": i, "e2e_ms": base_ms + 10 * i, "error": None, "warmup": False} for i in range(40)],
            "meta": {"suite": "latency"}}


def safety() -> dict:
    return {"metrics": {"refusal_rate": 0.5, "pii_leakage_rate": 0.0, "guardrail_violation_rate": 0.1,
                        "error_rate": 0.0, "samples_total": 20.0}, "samples": [], "meta": {"suite": "safety"}}


@pytest.fixture()
def evidence(tollgate_home: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    from evals.settings import REPO_ROOT

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(REPO_ROOT)
    model = f"orders-{uuid.uuid4().hex[:8]}"
    folder = promotion.run_folder("model_promotion", "manual__9", model, "2")
    run = RunFolder(str(promotion.local_results_dir(folder)))
    champion_success = [1.0] * 40 + [0.0] * 20
    candidate_success = [1.0] * 42 + [0.0] * 18
    files = {"quality": (quality(candidate_success, 300.0), quality(champion_success, 250.0)),
             "latency": (latency(300.0), latency(250.0)), "safety": (safety(), safety())}
    for suite in SUITES:
        cand, champ = files[suite]
        for path in (run.results(suite), run.baseline(suite)):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(run.results(suite)).write_text(json.dumps(cand))
        Path(run.baseline(suite)).write_text(json.dumps(champ))
        code = gate_check.main(["--results", run.results(suite), "--threshold-file",
                                f"thresholds/embedded/{suite}.yaml", "--production-threshold-file",
                                f"thresholds/{suite}.yaml", "--baseline", run.baseline(suite),
                                "--output", run.verdict(suite), "--report", run.report(suite)])
        assert code in (0, 1)
    ev = promotion.record_evidence(model, "2", dag_id="model_promotion", dag_run_id="manual__9", results_dir=folder,
                                   title="Promote {m}:2 to production")
    return {"evidence": ev, "run": run, "mlflow": mlflow_server}


def test_the_approval_report_shows_both_verdicts_n_intervals_judge_and_canary(evidence: dict) -> None:
    body = evidence["evidence"]["report"]
    assert "| Suite | embedded profile (deciding) | production thresholds (same evidence) |" in body
    assert "| quality | PASSED | FAILED" in body  # judge-free embedded passes; production needs a judge
    assert "(embedded profile, deciding)" in body and "(production thresholds, same evidence, not deciding)" in body
    assert "| Gate | Metric | n | Value | 95% CI | Bound | Decides on | Δ vs champion (95% CI) | Method | Result |" in body
    assert "| regression | `task_success_rate_delta_vs_baseline` | 60 |" in body
    assert "McNemar exact, p=" in body and "paired bootstrap, 10000 resamples" in body and "Wilson 95 %" in body
    assert "**FAIL** (not judged)" in body
    assert "**Judge:** not judged: no independent judge configured" in body
    assert "**Canary after approval:**" in body and "canary" in body.split("**Canary after approval:**")[1]
    assert body.count("[MLflow run of the ") == len(SUITES)


def test_the_plots_are_logged_to_mlflow_and_linked_from_the_page(evidence: dict) -> None:
    body = evidence["evidence"]["report"]
    links = [line[line.index("(") + 1:-1] for line in body.splitlines() if line.startswith("![")]
    names = {link.split("path=plots%2F")[1].split("&")[0] for link in links}
    assert names == {"latency-cdf.png", "quality-per-category.png", "quality-paired-deltas.png"}
    for link in links:
        assert link.startswith(evidence["mlflow"])
        resp = httpx.get(link, timeout=30)
        assert resp.status_code == 200 and resp.content[:8] == b"\x89PNG\r\n\x1a\n", link


def test_the_champions_first_evaluation_establishes_its_baseline(tollgate_home: Path, mlflow_server: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    model = f"orders-{uuid.uuid4().hex[:8]}"
    registry.register_model_version(model, f"s3://models/{model}/1", hashlib.sha256(b"w").hexdigest())
    registry.move_alias(model, "champion", "1", actor="test", reason="bootstrap")
    own = promotion.run_folder("model_evaluation", "nightly__1", model, "1")
    assert promotion.fetch_baseline(model, "1", own, subject_version="1") == dict.fromkeys(SUITES, "established")
    base = json.loads(Path(RunFolder(str(promotion.local_results_dir(own))).baseline("quality")).read_text())
    assert base["meta"]["establishes_baseline"] is True
    # a candidate (not the champion) with no champion results still fails closed
    other = promotion.run_folder("model_promotion", "manual__1", model, "2")
    assert promotion.fetch_baseline(model, "1", other, subject_version="2") == dict.fromkeys(SUITES, "none")
    base = json.loads(Path(RunFolder(str(promotion.local_results_dir(other))).baseline("quality")).read_text())
    assert base["meta"]["establishes_baseline"] is False
