"""tollgate.pipeline: the eval chain's pod steps read and write the contract's files and variables."""

from __future__ import annotations

from evals.contract import JUDGE_API_KEY_ENV, RunFolder
from tollgate.pipeline import Subject, build_evaluation

SUBJECT = Subject(name="orders", version="3", source="s3://models/orders/3", results_dir="d/run_1/orders-3")


def build():
    from airflow.sdk import DAG

    with DAG(dag_id="pipeline_contract", schedule=None):
        return build_evaluation(SUBJECT)


def test_the_judge_secret_reaches_the_eval_pods_under_the_name_the_judge_reads() -> None:
    chain = build()
    for suite, op in chain["evals"].items():
        names = {s.env for s in op.step.secret_env}
        if suite == "latency":
            assert JUDGE_API_KEY_ENV not in names
        else:
            assert JUDGE_API_KEY_ENV in names, suite


def test_steps_use_the_run_folder_layout() -> None:
    chain = build()
    pod = RunFolder("/results/d/run_1/orders-3")
    quality = list(chain["evals"]["quality"].step.args)
    assert quality[quality.index("--prompts") + 1] == pod.prompts
    assert quality[quality.index("--output") + 1] == pod.results("quality")
    assert quality[quality.index("--model") + 1] == "orders:3"
    gate = list(chain["gates"]["safety"].step.args)
    assert [gate[gate.index(flag) + 1] for flag in ("--results", "--baseline", "--output", "--report")] == [
        pod.results("safety"), pod.baseline("safety"), pod.verdict("safety"), pod.report("safety")]


def test_the_independent_judge_reaches_the_eval_pods(monkeypatch) -> None:
    monkeypatch.setenv("TOLLGATE_JUDGE_ENDPOINT", "https://judge.example/v1")
    monkeypatch.setenv("TOLLGATE_JUDGE_MODEL", "big-judge-70b")
    env = build()["evals"]["quality"].step.env
    assert env["TOLLGATE_JUDGE_ENDPOINT"] == "https://judge.example/v1" and env["TOLLGATE_JUDGE_MODEL"] == "big-judge-70b"
    monkeypatch.delenv("TOLLGATE_JUDGE_ENDPOINT")
    monkeypatch.delenv("TOLLGATE_JUDGE_MODEL")
    assert "TOLLGATE_JUDGE_ENDPOINT" not in build()["evals"]["quality"].step.env  # none: "not judged"


def test_a_non_production_profile_also_reports_production_verdicts(monkeypatch) -> None:
    monkeypatch.setenv("TOLLGATE_THRESHOLDS", "thresholds/embedded")
    gate = list(build()["gates"]["quality"].step.args)
    assert gate[gate.index("--threshold-file") + 1] == "thresholds/embedded/quality.yaml"
    assert gate[gate.index("--production-threshold-file") + 1] == "thresholds/quality.yaml"
    monkeypatch.setenv("TOLLGATE_THRESHOLDS", "thresholds")
    assert "--production-threshold-file" not in build()["gates"]["quality"].step.args  # it is the deciding one
