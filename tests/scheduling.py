"""How ``./tollgate test`` spreads its modules over the pytest-xdist workers.

The test command runs whole modules per worker (``--dist loadfile``: a module shares the
servers it started). Two things decide how long the run takes on two cores:

- **Order.** The end-to-end modules take many minutes each (the promotion module about
  24 on one worker, drift -> retrain about 9), the rest seconds to a few minutes. Handed
  out longest first (``SLOW_MODULES``, measured), the short modules fill the other
  worker around the long ones instead of queuing behind them at the end.
- **No early hand-out.** xdist's scope schedulers give a worker its next module as soon
  as its current one has two tests left. When those two are a 9-minute canary and a
  re-run, the next module waits behind them while the other worker may sit idle. Here a
  worker gets its next module only when its current one is down to the test it is
  running (an xdist worker needs the next item before it runs its last one).
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadFileScheduling

# Longest first; seconds are one fresh-clone run on 2 cores (durations of the tests in the
# module, with their servers' start). Modules not listed keep their collection order after these.
SLOW_MODULES: tuple[tuple[str, int], ...] = (
    ("tests/dags/test_promotion_e2e.py", 1600),
    ("tests/dags/test_drift_retrain_e2e.py", 560),
    ("tests/faults/test_airflow_live.py", 310),
    ("tests/faults/test_serving.py", 300),
    ("tests/infra/test_dashboard_live.py", 170),
    ("tests/faults/test_s3_staging.py", 150),
    ("tests/faults/test_registry.py", 150),
    ("tests/infra/test_postgres.py", 120),
)


def module_rank(nodeid: str) -> int:
    path = nodeid.split("::", 1)[0]
    for rank, (module, _) in enumerate(SLOW_MODULES):
        if path == module:
            return rank
    return len(SLOW_MODULES)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # A stable sort: every worker collects the same order (xdist checks), tests inside a
    # module keep theirs.
    items.sort(key=lambda item: module_rank(item.nodeid))


class LastTestLoadFileScheduling(LoadFileScheduling):  # type: ignore[misc]
    """``--dist loadfile`` that hands a worker its next module only at its last test."""

    def _reschedule(self, node: Any) -> None:
        if node.shutting_down:
            return
        if not self.workqueue:
            node.shutdown()
            return
        if self._pending_of(self.assigned_work[node]) > 1:
            return
        self._assign_work_unit(node)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist", None) != "loadfile":
        return None
    return LastTestLoadFileScheduling(config, log)
