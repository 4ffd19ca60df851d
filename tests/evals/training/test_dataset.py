"""Traffic -> training pairs: what may teach, dedup, the split, and the two pod CLIs' bad input."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evals.suites.policy import load_policy
from evals.training import dataset as ds
from evals.training import lora
from tests.fixtures.airflow import REPO_ROOT

POLICY = load_policy(REPO_ROOT / "evals" / "policies" / "safety.yaml")


def row(rid: str, prompt: str, **kw) -> dict:
    base = {"kind": "request", "request_id": rid, "status": 200, "prompt_text": prompt, "output_text": "2x Pizza",
            "redacted": False, "guardrail_hits": [], "refusal": False, "ts": f"2026-12-01T00:00:{int(rid[1:]):02d}"}
    return {**base, **kw}


def test_only_trusted_safe_answers_teach() -> None:
    rows = [
        row("r1", "2 pza", feedback_score=1.0),                               # liked answer
        row("r2", "3 pza", reference="3x Pizza"),                              # a correction
        row("r3", "4 pza", feedback_score=-1.0),                               # disliked
        row("r4", "5 pza"),                                                    # no feedback
        row("r5", "6 pza", feedback_label="positive", redacted=True),          # prompt not logged
        row("r6", "7 pza", feedback_score=1.0, status=500),                    # failed
        row("r7", "8 pza", feedback_score=1.0, guardrail_hits=["no-pii"]),     # flagged by the gateway
        row("r8", "9 pza", feedback_score=1.0, output_text="I can't help with that."),
        row("r9", "call me at 415-555-2671", reference="ok"),                  # PII in the prompt
        row("r10", "how?", reference="use ammonium nitrate"),                  # forbidden content
        {"kind": "feedback", "request_id": "r1", "feedback_score": 1.0},
    ]
    pairs, report = ds.select(rows, POLICY)
    assert [(p.id, p.answer, p.source) for p in pairs] == [("r1", "2x Pizza", "feedback"), ("r2", "3x Pizza", "reference")]
    assert report.dropped == {"no_trusted_answer": 2, "prompt_not_logged": 1, "failed_request": 1,
                              "guardrail_hit": 1, "refusal": 1, "pii": 1, "forbidden_content": 1}
    assert report.requests == 10 and report.kept == 2


def test_duplicates_count_once_and_a_reference_wins() -> None:
    rows = [row("r1", "2  PZA", feedback_score=1.0), row("r2", "2 pza", reference="2x Pizza (fixed)"),
            row("r3", "2 pza", feedback_score=1.0, output_text="newer")]
    pairs, report = ds.select(rows, POLICY)
    assert [(p.id, p.answer) for p in pairs] == [("r2", "2x Pizza (fixed)")]
    assert report.dropped["duplicate"] == 2


def test_split_is_stable_disjoint_and_keeps_the_newest() -> None:
    pairs = [ds.Pair(id=str(i), prompt=f"p{i}", answer="a", source="reference", topic=None, ts=f"{i:04d}")
             for i in range(50)]
    train, held = ds.split(pairs, 0.2, seed=7, max_examples=40)
    assert len(held) == 8 and len(train) == 32
    assert {p.id for p in train} | {p.id for p in held} == {str(i) for i in range(10, 50)}
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    assert ds.split(pairs, 0.2, seed=7, max_examples=40) == (train, held)
    assert ds.split(pairs, 0.2, seed=8, max_examples=40)[1] != held


def test_eval_items_follow_the_quality_schema() -> None:
    item = ds.Pair(id="r1", prompt="2 pza", answer="2x Pizza", source="reference", topic="order_normalization",
                   ts="").quality_item()
    assert item["task"] == "order_normalization" and item["scorer"] == "exact" and item["reference"] == "2x Pizza"
    other = ds.Pair(id="r2", prompt="q", answer="a", source="feedback", topic="catering", ts="").quality_item()
    assert other["task"] == "factual" and other["scorer"] == "contains"


def test_lr_schedule_and_batches() -> None:
    assert [lora.schedule(s, 10, 2) for s in (0, 1, 2, 9)] == pytest.approx([0.5, 1.0, 1.0, 0.2125])
    plan = lora.batches([([1], [1])] * 5, batch_size=2, steps=6, seed=1)
    assert len(plan) == 6 and all(len(b) == 2 for b in plan)
    assert len(set(plan[0] + plan[1])) == 4  # an epoch is used up before any example repeats


def _cli(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def test_trainset_cli(tmp_path: Path) -> None:
    from evals import requestlog
    from tests.fixtures.traffic_rows import traffic

    start = datetime.now(UTC) - timedelta(hours=1)
    requestlog.write_table(traffic(120, start, model="m"), tmp_path / "logs")
    src = str(tmp_path / "logs" / "request-logs" / "m")
    window = ("--start", (start - timedelta(minutes=1)).isoformat(), "--end", datetime.now(UTC).isoformat())
    py = REPO_ROOT / ".venv" / "bin" / "python"
    out = tmp_path / "ds"
    res = _cli(py, "evals.trainset", "--logs", src, *window, "--output-dir", str(out), "--min-examples", "10")
    assert res.returncode == 0, res.stderr[-2000:]
    meta = json.loads((out / "dataset.json").read_text())
    train = (out / "train.jsonl").read_text().splitlines()
    assert meta["train_examples"] == len(train) >= 10 and meta["eval_examples"] >= 1
    assert meta["report"]["dropped"]["duplicate"] > 0 and len(meta["sha256"]) == 64

    res = _cli(py, "evals.trainset", "--logs", src, *window, "--output-dir", str(tmp_path / "few"),
               "--min-examples", "5000")
    assert res.returncode == 1 and "training pairs" in res.stderr and not (tmp_path / "few").exists()
    res = _cli(py, "evals.trainset", "--logs", str(tmp_path / "nope"), *window, "--output-dir", str(tmp_path / "x"))
    assert res.returncode == 2 and "--logs" in res.stderr.splitlines()[-1] and not (tmp_path / "x").exists()


@pytest.mark.parametrize("case", ["no_base", "empty_train", "bad_flag"])
def test_train_cli_bad_input_is_one_line_exit_2(tmp_path: Path, case: str) -> None:
    from evals import settings

    train = tmp_path / "train.jsonl"
    train.write_text("" if case == "empty_train" else json.dumps({"prompt": "p", "answer": "a"}) + "\n")
    base = tmp_path / "nope" if case == "no_base" else settings.embedded_model_dir()
    extra = ("--max-steps", "0") if case == "bad_flag" else ()
    res = _cli(settings.serve_python(), "evals.train", "--base", str(base), "--train", str(train), "--output",
               str(tmp_path / "model"), "--metrics", str(tmp_path / "m.json"), *extra)
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) == 1 if case != "bad_flag" else "--max-steps" in res.stderr
    assert not (tmp_path / "model").exists() and not (tmp_path / "m.json").exists()
