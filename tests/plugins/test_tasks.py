"""tollgate.tasks: the tasks both DAGs share, their ids, trigger rules, run folder and XCom shapes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from evals.contract import SUITES, RunFolder
from tollgate import promotion, tasks

REQUEST = {"model_name": "orders", "model_version": "2", "target_env": "production", "champion_version": None}


def build(dag_id: str = "shared_tasks"):
    from airflow.sdk import DAG

    with DAG(dag_id=dag_id, schedule=None) as dag:
        tasks.materialize_prompts(dag_id)(REQUEST)
        tasks.fetch_baseline(dag_id)(REQUEST)
        tasks.record_evidence(dag_id, title="Promote {model_name}:{model_version} to {target_env}")(REQUEST)
    return dag


def test_task_ids_and_trigger_rules() -> None:
    dag = build()
    assert {t.task_id: t.trigger_rule for t in dag.tasks} == {
        "materialize_prompts": "all_success", "fetch_baseline": "all_success", "record_evidence": "all_done"}


def test_the_run_folder_comes_from_the_dag_id_and_the_run(tollgate_home: Path) -> None:
    dag = build("model_evaluation")
    found = dag.get_task("fetch_baseline").python_callable(REQUEST, run_id="manual__2026-01-01T00:00:00+00:00")
    assert found == dict.fromkeys(SUITES, "none")  # no champion: empty baselines, the regression gate fails closed
    folder = promotion.run_folder("model_evaluation", "manual__2026-01-01T00:00:00+00:00", "orders", "2")
    assert tasks.request_folder("model_evaluation", "manual__2026-01-01T00:00:00+00:00", REQUEST) == folder
    local = RunFolder(str(promotion.local_results_dir(folder)))
    for suite in SUITES:
        assert json.loads(Path(local.baseline(suite)).read_text())["metrics"] == {}


def test_record_evidence_titles_the_report_from_the_request(tollgate_home: Path, mlflow_server: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    request = {**REQUEST, "model_name": f"orders-{uuid.uuid4().hex[:8]}"}
    dag = build("model_promotion")
    evidence = dag.get_task("record_evidence").python_callable(request, run_id="manual__1")
    assert set(evidence) == {"run_id", "run_url", "report", "failed_gates", "suite_runs"}
    assert evidence["report"].startswith(f"## Promote {request['model_name']}:2 to production\n")
    # Nothing ran upstream: every suite counts as undecided, never as passed.
    assert [g.split(":")[0] for g in evidence["failed_gates"]] == list(SUITES)
