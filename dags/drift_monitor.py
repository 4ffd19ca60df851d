"""drift_monitor: every hour, compare the champion's latest traffic with its first traffic.

The reference window is the period right after the current champion was promoted (from
the alias audit trail); the current window is the last `window_hours` of the gateway's
request logs. The drift pod computes the statistics and judges them with the drift gate
file (`thresholds/drift.yaml`, `TOLLGATE_DRIFT_THRESHOLDS`), and every statistic, the verdict and the plots land in MLflow under
the champion's promotion evidence run. A failed drift gate triggers `retrain` for the
model with the drift report as the reason: at most once per `cooldown_hours`, and never
while a retrain of the same model is still queued or running. A window that fails its
data checks fails this run (a check that cannot decide), it is not a drift verdict.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# Named for the dag-processor, which imports a file's airflow.* modules once, before it forks the
# parsing child ([dag_processor] parsing_pre_import_modules): Airflow's TaskFlow machinery
# (which `task` loads on first use) is then loaded once, not in every parse of this file.
import airflow.sdk.definitions.decorators  # noqa: F401
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param, task
from airflow.task.trigger_rule import TriggerRule

from evals.contract import MODEL_NAME_PATTERN
from tollgate import constants as c
from tollgate import promotion as p
from tollgate import settings
from tollgate.operators.factory import pod_task
from tollgate.pipeline import s3_env
from tollgate.podspec import ModelVolume, PodStep, Resources, ResultsLocation

DAG_ID = "drift_monitor"
SETTINGS = settings.current()
FOLDER = "{{ ti.xcom_pull(task_ids='windows')['folder'] }}"
IN_POD = f"{c.RESULTS_MOUNT_PATH}/{FOLDER}"


def _win(key: str) -> str:
    return "{{ ti.xcom_pull(task_ids='windows')['" + key + "'] }}"


def window_args() -> tuple[str, ...]:
    """Both windows as the drift and plot pods take them: a source and [start, end) each."""
    return ("--reference", _win("logs"), "--reference-start", _win("reference_start"),
            "--reference-end", _win("reference_end"),
            "--current", _win("logs"), "--current-start", _win("current_start"),
            "--current-end", _win("current_end"))


with DAG(
    dag_id=DAG_ID,
    description="Drift of the champion's production traffic; triggers retrain when a drift gate fails",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,  # an old window is not worth checking late
    max_active_runs=1,  # the cooldown ledger is read and written by one run at a time
    tags=["tollgate", "drift", "retraining"],
    default_args={"owner": "ml-platform", "retries": 0, "retry_delay": timedelta(seconds=30)},
    params={
        "model_name": Param("smollm2-orders", type="string", pattern=MODEL_NAME_PATTERN,
                            description="Registered model whose champion's traffic is watched"),
        "window_hours": Param(1, type="number", exclusiveMinimum=0, description="the current window, hours"),
        "reference_hours": Param(24, type="number", exclusiveMinimum=0,
                                 description="the reference window after the champion's promotion, hours"),
        "cooldown_hours": Param(24, type="number", minimum=0,
                                description="at most one retrain trigger per model in this many hours"),
        "as_of": Param("", type="string", description="end of the current window, ISO 8601 UTC (empty: now); "
                       "re-checks a past hour"),
    },
    doc_md=__doc__,
) as dag:

    @task.short_circuit
    def windows(params: dict | None = None, run_id: str | None = None) -> dict:
        """The two windows; nothing to check (skip) while the champion is younger than both."""
        from datetime import UTC

        from tollgate import retrain

        model = params["model_name"]
        as_of = retrain.as_of(params["as_of"]) or datetime.now(UTC)
        win = retrain.champion_windows(model, as_of, window_hours=float(params["window_hours"]),
                                       reference_hours=float(params["reference_hours"]))
        if win is None:
            print(f"{model}: the champion's reference window is not over yet; nothing to compare")
            return {}
        out = {**win.to_dict(), "logs": settings.current().request_log_source(model),
               "folder": p.run_folder(DAG_ID, run_id or "manual", model, win.champion_version)}
        print(f"{model}:{win.champion_version} reference [{win.reference_start}, {win.reference_end}) "
              f"current [{win.current_start}, {win.current_end}) from {out['logs']}")
        return out

    s3_plain, s3_secrets = s3_env()
    reads = ModelVolume.for_reading() if SETTINGS.execution == c.ExecutionMode.LOCAL.value else None
    handoff = {"handoff": FOLDER, "volume": reads}

    # Exit 1 is drift or a failed data check (the results' verdict says which): the task shows
    # red, and `record` (all_done) reads the verdict either way.
    drift = pod_task(PodStep(
        name="drift", command=("python", "-m", "evals.drift"),
        args=(*window_args(), "--thresholds", SETTINGS.drift_thresholds,
              "--model", "{{ params.model_name }}:" + _win("champion_version"),
              "--output", f"{IN_POD}/drift.json", "--report", f"{IN_POD}/drift.report.md"),
        env=s3_plain, secret_env=s3_secrets, resources=Resources(cpu="2", memory="4Gi"),
        results=ResultsLocation.on_volume(f"{FOLDER}/drift.json"), **handoff,
    ), task_id="drift")

    plots = pod_task(PodStep(
        name="drift-plots", command=("python", "-m", "evals.driftplots"),
        args=(*window_args(), "--report", f"{IN_POD}/drift.json", "--output-dir", f"{IN_POD}/plots"),
        env=s3_plain, secret_env=s3_secrets, resources=Resources(cpu="1", memory="2Gi"), **handoff,
    ), task_id="drift_plots", trigger_rule=TriggerRule.ALL_DONE)

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def record(win: dict, run_id: str | None = None) -> dict:
        """Every statistic, the verdict and the plots into MLflow; the verdict back (drifted or not)."""
        import json

        from tollgate import retrain
        from tollgate.exceptions import TollgateError
        from tollgate.resultstore import synced

        with synced(win["folder"], pull=True) as folder:
            report = folder / "drift.json"
            if not report.is_file():
                raise TollgateError("the drift check wrote no results (bad input): nothing was judged; "
                                    "see the drift task's log")
            run = retrain.log_drift_run(win, dag_run_id=run_id or "manual", report=report,
                                        extra=[folder / "drift.report.md"],
                                        plots=sorted((folder / "plots").glob("*.png")))
            drifted, failed = retrain.drift_verdict(json.loads(report.read_text()).get("verdict"))
        print(f"{win['model']}:{win['champion_version']}: {'DRIFT: ' + ', '.join(failed) if drifted else 'no drift'}"
              f" (MLflow run {run})")
        return {"drift_run_id": run, "drifted": drifted, "failed_gates": failed}

    @task.short_circuit
    def decide(win: dict, verdict: dict, params: dict | None = None, ti=None) -> dict:
        """Trigger retrain? Only on drift, never beside an open retrain of the model, once per cooldown."""
        from datetime import UTC

        from tollgate import retrain

        model, now = win["model"], datetime.now(UTC)
        last = retrain.last_trigger(model)
        open_run = None
        if last is not None and ti.get_dr_count(dag_id=retrain.RETRAIN_DAG_ID, run_ids=[last[0]],
                                                states=list(retrain.OPEN_STATES)):
            open_run = last[0]
        decision = retrain.decide(drifted=verdict["drifted"], now=now, last_triggered=last[1] if last else None,
                                  open_run=open_run, cooldown=timedelta(hours=float(params["cooldown_hours"])))
        print(f"{model}: {'trigger retrain' if decision.trigger else 'no retrain'}: {decision.reason}")
        if not decision.trigger:
            return {}
        run = retrain.retrain_run_id(model, now)
        retrain.record_trigger(verdict["drift_run_id"], run, now)  # the ledger first: at most once
        reason = "drift: " + ", ".join(verdict["failed_gates"] or ["verdict not passed"])
        return {"run_id": run, "conf": {"model_name": model, "drift_run_id": verdict["drift_run_id"],
                                        "reason": reason[:500]}}

    win = windows()
    win >> drift >> plots
    verdict = record(win)
    [drift, plots] >> verdict
    decision = decide(win, verdict)
    TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id="retrain",
        trigger_run_id="{{ ti.xcom_pull(task_ids='decide')['run_id'] }}",
        conf=decision["conf"],
        wait_for_completion=False,
        skip_when_already_exists=True,  # a retried trigger finds its own run
    ).set_upstream(decision)
