"""The failure table in docs/FAILURES.md is the matrix, and every row of the matrix has a test."""

from __future__ import annotations

import importlib
from collections import Counter

from tests.faults import table
from tests.faults.matrix import CASES, GROUPS


def test_committed_failures_doc_is_the_generated_one() -> None:
    assert table.DOC.read_text() == table.render(), "run: .venv/bin/python -m tests.faults.table --write"


def test_matrix_has_enough_unique_cases_with_an_implementation_each() -> None:
    ids = Counter(c.id for c in CASES)
    assert not [i for i, n in ids.items() if n > 1], "duplicate case ids"
    assert len(CASES) >= 60
    assert {c.group for c in CASES} <= set(GROUPS)
    for c in CASES:
        mod = importlib.import_module(f"tests.faults.{c.module}")
        assert c.id in mod.IMPL, f"{c.module} has no implementation of {c.id}"
        assert c.where and c.inject and c.holds
    for name in {c.module for c in CASES}:
        extra = set(importlib.import_module(f"tests.faults.{name}").IMPL) - {c.id for c in CASES if c.module == name}
        assert not extra, f"{name} implements cases that are not in the matrix: {extra}"
