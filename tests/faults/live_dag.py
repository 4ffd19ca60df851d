"""The promotion's decision path as two small DAGs, for tests/faults/test_airflow_live.py.

Copied into a temporary dags folder that a real dag-processor parses; a real scheduler and
triggerer run it. validate (promotion.validate_request against the real MLflow) ->
approval (tollgate.approvals.PromotionApproval, default Reject) -> promote
(promotion.promote, compare-before-move) -> finalize (the run's ending: the move, or a
promotion.record_no_move record). No evaluation: the rows are about the approval and the move.

``faults_live_timeout`` times out after TIMEOUT_S; ``faults_live_restart`` waits long enough
for a scheduler to be killed and restarted. The Param ``hold`` (a path) makes promote write
``HOLD.reached`` (its process group) and wait for ``HOLD.release`` before it moves anything.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.task.trigger_rule import TriggerRule

from tollgate import promotion as p
from tollgate.approvals import DECISION_KEY, PromotionApproval

TIMEOUT_S = 20
RESTART_TIMEOUT_S = 900
HOLD_LIMIT_S = 300


def hold(path: str) -> None:
    """Say where this task runs, then wait for the test's release file (no output: nothing to a dead supervisor)."""
    if not path:
        return
    Path(f"{path}.reached").write_text(str(os.getpgid(0)))
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not Path(f"{path}.release").exists():
        if time.monotonic() > deadline:
            raise AirflowFailException(f"{path}.release never came")
        time.sleep(0.2)  # polling the test's file, bounded by the deadline


def build(dag_id: str, timeout_s: int) -> DAG:
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_runs=1,
             params={"model_name": Param("", type="string"), "model_version": Param("2", type="string"),
                     "hold": Param("", type="string")}) as dag:

        @task
        def validate(params: dict | None = None) -> dict:
            return p.validate_request(params["model_name"], params["model_version"], "production")

        @task(retries=2, retry_delay=timedelta(seconds=1))
        def promote(request: dict, params: dict | None = None, run_id: str | None = None, ti=None) -> dict:
            decision, who = p.approval_outcome(ti.xcom_pull(task_ids="approval", key=DECISION_KEY))
            if decision != "approved":
                raise AirflowSkipException(f"not approved ({decision})")
            hold(params["hold"])
            return p.promote(request["model_name"], request["model_version"], request["alias"], approver=who,
                             evidence_run_id=None, canary=None, dag_id=dag_id, dag_run_id=run_id,
                             expect_from=request["current_target"])

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def finalize(request: dict, run_id: str | None = None, ti=None) -> dict:
            moved = ti.xcom_pull(task_ids="promote")
            if moved:
                return {"outcome": "promoted", **moved}
            decision, who = p.approval_outcome(ti.xcom_pull(task_ids="approval", key=DECISION_KEY))
            p.record_no_move(request["model_name"], request["model_version"], request["alias"], decision=decision,
                             actor=who, evidence_run_id=None, why=f"approval {decision}", dag_id=dag_id,
                             dag_run_id=run_id)
            raise AirflowFailException(f"promotion ended without a move: {decision}")

        request = validate()
        approval = PromotionApproval(
            task_id="approval", subject="Promote {{ params.model_name }}:{{ params.model_version }}?",
            body="fault matrix", assigned_users=[{"id": "approver", "name": "approver"}],
            response_timeout=timedelta(seconds=timeout_s), defaults="Reject")
        moved = promote(request)
        request >> approval >> moved >> finalize(request)
    return dag


timeout_dag = build("faults_live_timeout", TIMEOUT_S)
restart_dag = build("faults_live_restart", RESTART_TIMEOUT_S)
