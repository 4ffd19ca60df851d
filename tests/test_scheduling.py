"""The test command's module order and hand-out (tests/scheduling.py)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests import scheduling

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_every_listed_slow_module_exists_and_the_list_is_longest_first() -> None:
    for module, _ in scheduling.SLOW_MODULES:
        assert (REPO_ROOT / module).is_file(), f"{module} listed in tests/scheduling.py but not in the tree"
    seconds = [s for _, s in scheduling.SLOW_MODULES]
    assert seconds == sorted(seconds, reverse=True)


def test_slow_modules_sort_first_and_keep_their_tests_in_order() -> None:
    items = [SimpleNamespace(nodeid=n) for n in (
        "tests/evals/test_gates.py::test_a", "tests/dags/test_drift_retrain_e2e.py::test_x",
        "tests/evals/test_gates.py::test_b", "tests/dags/test_promotion_e2e.py::test_1",
        "tests/dags/test_promotion_e2e.py::test_2")]
    scheduling.pytest_collection_modifyitems(None, None, items)  # type: ignore[arg-type]
    assert [i.nodeid for i in items] == [
        "tests/dags/test_promotion_e2e.py::test_1", "tests/dags/test_promotion_e2e.py::test_2",
        "tests/dags/test_drift_retrain_e2e.py::test_x",
        "tests/evals/test_gates.py::test_a", "tests/evals/test_gates.py::test_b"]


class _Node:
    shutting_down = False

    def __init__(self) -> None:
        self.shut = False

    def shutdown(self) -> None:
        self.shut = True


def _scheduler(pending: int, queued: int) -> tuple[Any, _Node, list[Any]]:
    sched = object.__new__(scheduling.LastTestLoadFileScheduling)
    node = _Node()
    sched.assigned_work = {node: {"tests/a.py": {f"tests/a.py::t{i}": i >= pending for i in range(3)}}}
    sched.workqueue = OrderedDict((f"tests/m{i}.py", {}) for i in range(queued))
    assigned: list[Any] = []
    sched._assign_work_unit = assigned.append
    return sched, node, assigned


@pytest.mark.parametrize(("pending", "handed_out"), [(3, False), (2, False), (1, True), (0, True)])
def test_a_worker_gets_its_next_module_only_at_its_last_test(pending: int, handed_out: bool) -> None:
    sched, node, assigned = _scheduler(pending=pending, queued=2)
    sched._reschedule(node)
    assert assigned == ([node] if handed_out else [])
    assert not node.shut


def test_a_worker_is_shut_down_when_nothing_is_left() -> None:
    sched, node, assigned = _scheduler(pending=1, queued=0)
    sched._reschedule(node)
    assert node.shut and assigned == []


def test_only_loadfile_gets_this_scheduler() -> None:
    config = SimpleNamespace(getoption=lambda name, default=None: "load")
    assert scheduling.pytest_xdist_make_scheduler(config, None) is None  # type: ignore[arg-type]
