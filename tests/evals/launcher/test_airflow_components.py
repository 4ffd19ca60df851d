"""airflow_spec's process groups: all four components, or a subset (a scheduler that can be killed alone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.errors import BadInput
from evals.launcher import airflow_spec

START = {"api-server": "airflow api-server ", "scheduler": "airflow scheduler ", "dag-processor": "airflow dag-processor",
         "triggerer": "airflow triggerer "}


def started(spec) -> set[str]:
    script = spec.argv[-1]
    return {name for name, cmd in START.items() if cmd in script}


def test_the_default_group_runs_all_four_and_is_ready_when_the_api_answers(tmp_path: Path) -> None:
    spec = airflow_spec(8123, home=tmp_path)
    assert started(spec) == set(START)
    assert "airflow db migrate" in spec.argv[-1]
    assert (spec.port, spec.health_path) == (8123, "/api/v2/monitor/health")
    assert airflow_spec(8123, home=tmp_path, api_server_only=True).argv == \
        airflow_spec(8123, home=tmp_path, components=["api-server"]).argv


def test_a_scheduler_group_waits_for_the_other_groups_api_and_is_ready_by_its_own_health_check(tmp_path: Path) -> None:
    rest = airflow_spec(8123, home=tmp_path, components=("triggerer", "api-server", "dag-processor"))
    assert started(rest) == {"api-server", "dag-processor", "triggerer"}
    sched = airflow_spec(8123, home=tmp_path, components=("scheduler",), health_port=8124)
    assert started(sched) == {"scheduler"}
    script = sched.argv[-1]
    assert "db migrate" not in script, "the api-server's group migrates; a restarted scheduler must not"
    assert script.index("127.0.0.1:8123/api/v2/monitor/health") < script.index("airflow scheduler")
    assert (sched.port, sched.health_path) == (8124, "/health")
    assert sched.env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"
    assert sched.env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
    assert sched.env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] == "8124"
    assert sched.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8123/execution/"


@pytest.mark.parametrize("components", [(), ("webserver",), ("dag-processor", "triggerer")])
def test_a_group_that_cannot_start_or_be_seen_ready_is_bad_input(tmp_path: Path, components) -> None:
    with pytest.raises(BadInput):
        airflow_spec(8123, home=tmp_path, components=components)
