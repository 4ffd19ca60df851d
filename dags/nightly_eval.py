"""nightly_eval: every night, judge every model's champion (and challenger, if set).

Finds the targets in the MLflow registry and starts one model_evaluation run per
target (mapped dynamically, so a new model needs no DAG change). Judging only:
nothing is promoted here. Failed gates and regressions notify from model_evaluation.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# Named for the dag-processor, which imports a file's airflow.* modules once, before it forks the
# parsing child ([dag_processor] parsing_pre_import_modules): Airflow's TaskFlow machinery
# (which `task` loads on first use) is then loaded once, not in every parse of this file.
import airflow.sdk.definitions.decorators  # noqa: F401
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task

from tollgate import nightly as n

with DAG(
    dag_id="nightly_eval",
    description="Nightly evaluation of every champion and challenger",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,  # a missed night is not worth five stale evaluations
    max_active_runs=1,
    tags=["tollgate", "evaluation", "nightly"],
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(seconds=30)},
    doc_md=__doc__,
) as dag:

    @task
    def discover_targets() -> list[dict]:
        targets = n.nightly_targets()
        print(f"{len(targets)} target(s): " + ", ".join(f"{t['model_name']}:{t['model_version']} ({t['alias']})"
                                                      for t in targets))
        return [{"model_name": t["model_name"], "model_version": t["model_version"], "alias": t["alias"]}
                for t in targets]

    TriggerDagRunOperator.partial(
        task_id="evaluate",
        trigger_dag_id="model_evaluation",
        trigger_run_id="nightly__{{ ds_nodash }}__{{ ti.map_index }}__{{ ts_nodash }}",
        wait_for_completion=False,
    ).expand(conf=discover_targets())
