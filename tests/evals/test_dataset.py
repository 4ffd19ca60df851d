"""Datasets: the shipped files pass their Great Expectations checks; broken ones are refused
with the file and line named."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from evals.errors import BadInput
from evals.suites.dataset import default_dataset, load_dataset
from evals.suites.prompts import default_prompts, load_prompts


@pytest.fixture(scope="module")
def quality():
    return load_dataset(default_dataset("quality"), "quality")


@pytest.fixture(scope="module")
def safety():
    return load_dataset(default_dataset("safety"), "safety")


def test_quality_dataset_size_and_coverage(quality):
    tasks = Counter(i["task"] for i in quality.items)
    assert len(quality.items) >= 150
    assert set(tasks) == {"order_normalization", "factual", "grounded"} and min(tasks.values()) >= 40
    assert all(i["contexts"] for i in quality.items if i["task"] == "grounded")
    assert len(quality.sha256) == 64 and quality.version != "external"
    assert "id unique" in quality.checks and "prompt not blank" in quality.checks


def test_safety_dataset_size_and_labels(safety):
    cats = Counter(i["category"] for i in safety.items)
    assert len(safety.items) >= 100
    assert set(cats) == {"harmful", "jailbreak", "pii", "benign"}
    assert {i["expected"] for i in safety.items if i["category"] == "benign"} == {"comply"}
    assert {i["expected"] for i in safety.items if i["category"] != "benign"} == {"refuse"}


def test_dataset_generator_reproduces_the_committed_files(tmp_path, monkeypatch):
    from evals.datasets import _generate

    monkeypatch.setattr(_generate, "HERE", tmp_path)
    _generate.main()
    for name in ("quality.jsonl", "safety.jsonl"):
        assert (tmp_path / name).read_bytes() == default_dataset(name.split(".")[0]).read_bytes()


def test_order_prompts_are_few_shot_data():
    prompts = load_prompts(default_prompts("quality"))
    orders = prompts.task("order_normalization")
    assert len(orders.few_shot) >= 3 and orders.params["temperature"] == 0.0
    msgs = orders.messages({"prompt": "lgr pep pzza x2"})
    assert msgs[0]["role"] == "system" and msgs[-1] == {"role": "user", "content": "lgr pep pzza x2"}
    assert len(msgs) == 2 + 2 * len(orders.few_shot)
    grounded = prompts.task("grounded").messages({"prompt": "Q?", "contexts": ["C1", "C2"]})
    assert "C1\n\nC2" in grounded[-1]["content"] and "Q?" in grounded[-1]["content"]
    assert prompts.provenance()["sha256"] and prompts.provenance()["version"] == "1"


def _write(tmp_path, rows, raw_lines=()):
    f = tmp_path / "bad.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(raw_lines))
    return f


def _good(n=4):
    return [{"id": f"s-{i}", "category": "benign", "prompt": f"hello {i}", "expected": "comply"} for i in range(n)]


@pytest.mark.parametrize(("mutate", "line", "message"), [
    (lambda rows: rows.__setitem__(2, {**rows[2], "prompt": "   "}), 3, "prompt not blank"),
    (lambda rows: rows.__setitem__(3, {**rows[3], "id": "s-1"}), 4, "id unique"),
    (lambda rows: rows.__setitem__(1, {**rows[1], "category": "spicy"}), 2, "category in"),
    (lambda rows: rows.__setitem__(1, {**rows[1], "expected": "maybe"}), 2, "expected in"),
    (lambda rows: rows[2].pop("prompt"), 3, "missing required field"),
    (lambda rows: rows.__setitem__(0, {**rows[0], "prompt": 42}), 1, "must be str"),
    (lambda rows: rows.__setitem__(2, {**rows[2], "prompt": None}), 3, "prompt not null"),
])
def test_invalid_safety_dataset_names_file_and_line(tmp_path, mutate, line, message):
    rows = _good()
    mutate(rows)
    f = _write(tmp_path, rows)
    with pytest.raises(BadInput) as exc:
        load_dataset(f, "safety")
    assert f"{f} line {line}" in str(exc.value) and message in str(exc.value)


def test_invalid_json_line_and_empty_file(tmp_path):
    f = _write(tmp_path, _good(2), raw_lines=["\n", "{not json}\n"])
    with pytest.raises(BadInput, match=r"bad.jsonl line 4: not valid JSON"):
        load_dataset(f, "safety")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(BadInput, match=r"empty.jsonl: dataset is empty"):
        load_dataset(empty, "safety")
    with pytest.raises(BadInput, match="no such file"):
        load_dataset(tmp_path / "missing.jsonl", "safety")


def test_quality_row_rules(tmp_path):
    base = {"id": "q1", "task": "factual", "prompt": "p", "reference": "r", "scorer": "regex", "pattern": "r"}
    with pytest.raises(BadInput, match=r"line 2: scorer 'regex' needs a 'pattern'"):
        load_dataset(_write(tmp_path, [base, {**base, "id": "q2", "pattern": ""}]), "quality")
    with pytest.raises(BadInput, match=r"line 1: invalid pattern"):
        load_dataset(_write(tmp_path, [{**base, "pattern": "("}]), "quality")
    with pytest.raises(BadInput, match=r"line 1: a .* item needs non-empty 'contexts'"):
        load_dataset(_write(tmp_path, [{**base, "task": "grounded", "contexts": []}]), "quality")
    with pytest.raises(BadInput, match=r"line 1: expectation 'scorer in"):
        load_dataset(_write(tmp_path, [{**base, "scorer": "bleu"}]), "quality")
    ok = load_dataset(_write(tmp_path, [base]), "quality")
    assert ok.version == "external" and len(ok.items) == 1
