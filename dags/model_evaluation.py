"""model_evaluation: the nightly judgement of one registered version (no promotion).

Triggered once per target by nightly_eval (one DAG run per model version, so each is
visible, retryable and logged on its own), or by hand. Stages, serves and evaluates the
version, gates every suite against the champion's last results, records the evidence in
MLflow, checks for regressions against the previous nightly of the same version, and
notifies when a gate fails or a regression shows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# Named for the dag-processor, which imports a file's airflow.* modules once, before it forks the
# parsing child ([dag_processor] parsing_pre_import_modules): Airflow's TaskFlow machinery
# (which `task` loads on first use) is then loaded once, not in every parse of this file.
import airflow.sdk.definitions.decorators  # noqa: F401
from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException
from airflow.task.trigger_rule import TriggerRule

from evals.contract import MODEL_NAME_PATTERN, MODEL_VERSION_PATTERN
from tollgate import nightly as n
from tollgate import promotion as p
from tollgate import tasks as shared
from tollgate.pipeline import Subject, build_evaluation

DAG_ID = "model_evaluation"
NAME = "{{ params.model_name }}"
VERSION = "{{ params.model_version }}"
FOLDER = "{{ run_folder(dag.dag_id, run_id, params.model_name, params.model_version) }}"

with DAG(
    dag_id=DAG_ID,
    description="Evaluate and gate one model version (judging only, nothing moves)",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    tags=["tollgate", "evaluation"],
    default_args={"owner": "ml-platform", "retries": 0, "retry_delay": timedelta(seconds=30)},
    params={
        "model_name": Param("smollm2-orders", type="string", pattern=MODEL_NAME_PATTERN),
        "model_version": Param("1", type="string", pattern=MODEL_VERSION_PATTERN),
        "alias": Param("champion", type="string", enum=["champion", "challenger", "staging", "none"]),
    },
    user_defined_macros={"run_folder": p.run_folder},
    doc_md=__doc__,
) as dag:

    @task
    def resolve(params: dict | None = None) -> dict:
        return p.validate_request(params["model_name"], str(params["model_version"]), "production")

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def regression_check(request: dict, evidence: dict, params: dict | None = None) -> dict:
        report = n.regression_check(request["model_name"], request["model_version"], evidence or {},
                                    alias=params["alias"])
        if report["alerts"]:
            raise AirflowFailException("nightly alerts: " + "; ".join(report["alerts"]))
        return report

    request = resolve()
    baseline = shared.fetch_baseline(DAG_ID)(request)
    subject = Subject(name=NAME, version=VERSION,
                      source="{{ ti.xcom_pull(task_ids='resolve')['source'] }}", results_dir=FOLDER)
    chain = build_evaluation(subject)
    request >> chain["stage"]
    shared.materialize_prompts(DAG_ID)(request) >> list(chain["evals"].values())
    evidence = shared.record_evidence(DAG_ID, title="Nightly evaluation of {model_name}:{model_version}")(request)
    for gate in chain["gates"].values():
        baseline >> gate >> evidence
    regression_check(request, evidence)
