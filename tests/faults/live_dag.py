"""The promotion's decision path as two small DAGs, for tests/faults/test_airflow_live.py.

Copied into a temporary dags folder that a real dag-processor parses; a real scheduler and
triggerer run it. validate (promotion.validate_request against the real MLflow) ->
approval (tollgate.approvals.PromotionApproval, default Reject) -> promote
(promotion.promote, compare-before-move) -> finalize (the run's ending: the move, or a
promotion.record_no_move record).

``faults_live_timeout`` times out after TIMEOUT_S and has no evaluation: its rows are about
the approval. ``faults_live_restart`` waits long enough for a scheduler to be killed and
restarted, and evaluates before it asks: evaluate runs the real ``python -m evals.gate_check``
on the Param ``results`` (a results JSON the test wrote) against the repository's
thresholds/latency.yaml and writes the verdict (gate_check's own atomic --output) to the
run's folder (``verdict_path``); promote refuses to move, and finalize records
``gate_failed``, when that verdict is missing or not passed.

The Params ``hold`` and ``eval_hold`` (paths) make promote (before it moves anything) or
evaluate (before it evaluates) write ``HOLD.reached`` (its process group) and wait for
``HOLD.release``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.task.trigger_rule import TriggerRule

from evals.contract import RunFolder
from evals.errors import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_PASS
from evals.settings import REPO_ROOT
from tollgate import promotion as p
from tollgate.approvals import DECISION_KEY, PromotionApproval

TIMEOUT_S = 20
RESTART_TIMEOUT_S = 900
HOLD_LIMIT_S = 300
GATE_CHECK_LIMIT_S = 120
SUITE = "latency"
THRESHOLDS = REPO_ROOT / "thresholds" / f"{SUITE}.yaml"  # a real gate file of the repository


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


def verdict_path(results: str, dag_id: str, run_id: str, model: str, version: str) -> Path:
    """The run's verdict: RunFolder(<results' folder>/<run_folder>).verdict(SUITE)."""
    return Path(RunFolder(str(Path(results).parent / p.run_folder(dag_id, run_id, model, version))).verdict(SUITE))


def refusal(verdict: Path) -> str | None:
    """Why nothing may move on this verdict file (missing, unreadable, not passed), or None when it passed."""
    try:
        data = json.loads(verdict.read_text())
    except (OSError, ValueError) as exc:
        return f"no {SUITE} verdict ({type(exc).__name__}: {verdict})"
    if not isinstance(data, dict) or data.get("passed") is not True:
        failed = data.get("failed_gates") if isinstance(data, dict) else None
        return f"{SUITE} gate(s) failed: {', '.join(failed) if failed else 'verdict not passed'}"
    return None


def build(dag_id: str, timeout_s: int, evaluate_first: bool = False) -> DAG:
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_runs=1,
             params={"model_name": Param("", type="string"), "model_version": Param("2", type="string"),
                     "hold": Param("", type="string"), "eval_hold": Param("", type="string"),
                     "results": Param("", type="string")}) as dag:

        def verdict_of(params: dict, run_id: str) -> Path:
            return verdict_path(params["results"], dag_id, run_id, params["model_name"], params["model_version"])

        @task
        def validate(params: dict | None = None) -> dict:
            return p.validate_request(params["model_name"], params["model_version"], "production")

        @task(retries=2, retry_delay=timedelta(seconds=1))
        def evaluate(request: dict, params: dict | None = None, run_id: str | None = None) -> dict:
            """gate_check on the results; its --output (written atomically) is the verdict later tasks read."""
            if not params["results"]:
                raise AirflowFailException("param results: no results file to evaluate")
            hold(params["eval_hold"])
            verdict = verdict_of(params, run_id)
            verdict.parent.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(  # output captured: nothing to a supervisor that may be dead
                [sys.executable, "-m", "evals.gate_check", "--results", params["results"],
                 "--threshold-file", str(THRESHOLDS), "--output", str(verdict)],
                capture_output=True, text=True, timeout=GATE_CHECK_LIMIT_S, cwd=REPO_ROOT, check=False)
            last = (done.stderr.strip().splitlines() or [""])[-1]
            if done.returncode == EXIT_BAD_INPUT:
                raise AirflowFailException(f"evals.gate_check: bad input (exit 2): {last}")
            if done.returncode not in (EXIT_PASS, EXIT_FAIL):
                raise RuntimeError(f"evals.gate_check exited {done.returncode}: {last}")  # retryable
            why = refusal(verdict)
            if (why is None) != (done.returncode == EXIT_PASS):
                raise AirflowFailException(f"evals.gate_check exited {done.returncode} but the verdict says {why}")
            if why:
                raise AirflowFailException(why)  # no approval asked; finalize records gate_failed
            data = json.loads(verdict.read_text())
            return {"passed": data["passed"], "failed_gates": data["failed_gates"], "verdict": str(verdict),
                    "results_sha256": data["results_sha256"], "thresholds_sha256": data["thresholds_sha256"]}

        @task(retries=2, retry_delay=timedelta(seconds=1))
        def promote(request: dict, params: dict | None = None, run_id: str | None = None, ti=None) -> dict:
            decision, who = p.approval_outcome(ti.xcom_pull(task_ids="approval", key=DECISION_KEY))
            if decision != "approved":
                raise AirflowSkipException(f"not approved ({decision})")
            if evaluate_first and (why := refusal(verdict_of(params, run_id))):
                raise AirflowFailException(f"refused, nothing moves: {why}")  # the evidence, not an XCom, decides
            hold(params["hold"])
            return p.promote(request["model_name"], request["model_version"], request["alias"], approver=who,
                             evidence_run_id=None, canary=None, dag_id=dag_id, dag_run_id=run_id,
                             expect_from=request["current_target"])

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def finalize(request: dict, params: dict | None = None, run_id: str | None = None, ti=None) -> dict:
            moved = ti.xcom_pull(task_ids="promote")
            if moved:
                return {"outcome": "promoted", **moved}
            decision, who = p.approval_outcome(ti.xcom_pull(task_ids="approval", key=DECISION_KEY))
            refused = refusal(verdict_of(params, run_id)) if evaluate_first else None
            outcome, why = ("gate_failed", refused) if refused else (decision, f"approval {decision}")
            p.record_no_move(request["model_name"], request["model_version"], request["alias"], decision=outcome,
                             actor=who, evidence_run_id=None, why=why, dag_id=dag_id, dag_run_id=run_id)
            raise AirflowFailException(f"promotion ended without a move: {outcome} ({why})")

        request = validate()
        approval = PromotionApproval(
            task_id="approval", subject="Promote {{ params.model_name }}:{{ params.model_version }}?",
            body="fault matrix", assigned_users=[{"id": "approver", "name": "approver"}],
            response_timeout=timedelta(seconds=timeout_s), defaults="Reject")
        moved = promote(request)
        if evaluate_first:
            request >> evaluate(request) >> approval
        else:
            request >> approval
        approval >> moved >> finalize(request)
    return dag


timeout_dag = build("faults_live_timeout", TIMEOUT_S)
restart_dag = build("faults_live_restart", RESTART_TIMEOUT_S, evaluate_first=True)
