"""model_promotion: evaluate a registered version, gate it, ask a person, canary it, promote it.

Triggered by hand with Params model_name, model_version, target_env. One run at a time.
Nothing moves unless every gate passed, an assigned approver said yes, and the canary
held; every ending (promoted, rejected, timed out, rolled back) leaves an audit record.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# Named for the dag-processor, which imports a file's airflow.* modules once, before it forks the
# parsing child ([dag_processor] parsing_pre_import_modules): Airflow's TaskFlow machinery and the HITL
# operator the approval builds on are then loaded once, not in every parse of this file.
import airflow.providers.standard.operators.hitl  # noqa: F401
import airflow.sdk.definitions.decorators  # noqa: F401
from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.task.trigger_rule import TriggerRule

from evals.contract import MODEL_NAME_PATTERN, MODEL_VERSION_PATTERN
from tollgate import constants as c
from tollgate import promotion as p
from tollgate import rollout, settings
from tollgate import tasks as shared
from tollgate.approvals import DECISION_KEY, PromotionApproval
from tollgate.exceptions import AliasConflict, GateFailed
from tollgate.operators.factory import pod_task
from tollgate.pipeline import Subject, build_evaluation
from tollgate.podspec import ModelVolume, PodStep, Resources

DAG_ID = "model_promotion"
SETTINGS = settings.current()
APPROVERS = list(SETTINGS.approvers)
RESPONSE_TIMEOUT = SETTINGS.approval_timeout
CANARY_THRESHOLDS = SETTINGS.canary_thresholds

REQ = "{{ ti.xcom_pull(task_ids='validate_request') }}"
NAME = "{{ params.model_name }}"
VERSION = "{{ params.model_version }}"
FOLDER = "{{ run_folder(dag.dag_id, run_id, params.model_name, params.model_version) }}"
CHAMPION = "{{ ti.xcom_pull(task_ids='validate_request')['champion_version'] }}"

with DAG(
    dag_id=DAG_ID,
    description="Gate, approve, canary and promote one model version",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one promotion at a time: alias moves have no compare-and-set in MLflow
    tags=["tollgate", "promotion"],
    default_args={"owner": "ml-platform", "retries": 0, "retry_delay": timedelta(seconds=30)},
    params={
        "model_name": Param("smollm2-orders", type="string", pattern=MODEL_NAME_PATTERN,
                            description="Registered model name (lowercase, digits, . _ -)"),
        "model_version": Param("2", type="string", pattern=MODEL_VERSION_PATTERN,
                               description="Registered version to promote"),
        "target_env": Param("staging", type="string", enum=["staging", "production"],
                            description="staging moves alias 'staging'; production moves 'champion'"),
        "traffic": Param(None, type=["null", "number"], minimum=1,
                         description="seconds each canary step holds its weight (empty: the canary policy's)"),
        "override_staging": Param(False, type="boolean",
                                  description="production without a recent staging pass (audited; needs a reason)"),
        "override_reason": Param("", type="string", description="why production skips staging"),
    },
    user_defined_macros={"run_folder": p.run_folder},
    doc_md=__doc__,
) as dag:

    @task
    def validate_request(params: dict | None = None, run_id: str | None = None, dag_run=None) -> dict:
        request = p.validate_request(params["model_name"], str(params["model_version"]), params["target_env"])
        if not request["already_promoted"]:  # production only after staging, or an audited override
            request["environment_order"] = rollout.check_environment_order(
                request, override=bool(params.get("override_staging")), override_reason=params.get("override_reason")
                or "", actor=getattr(dag_run, "triggering_user_name", None) or "model_promotion", dag_id=DAG_ID,
                dag_run_id=run_id)
        return request

    @task.short_circuit(ignore_downstream_trigger_rules=True)
    def not_yet_promoted(request: dict) -> bool:
        if request["already_promoted"]:
            print(f"{request['model_name']}:{request['model_version']} is already {request['alias']}: nothing to do")
        return not request["already_promoted"]

    @task
    def require_gates_passed(evidence: dict) -> None:
        try:
            p.require_gates_passed(evidence)
        except GateFailed as exc:
            raise AirflowFailException(str(exc)) from None

    request = validate_request()
    go = not_yet_promoted(request)
    baseline = shared.fetch_baseline(DAG_ID)(request)
    subject = Subject(name=NAME, version=VERSION, source="{{ ti.xcom_pull(task_ids='validate_request')['source'] }}",
                      results_dir=FOLDER)
    chain = build_evaluation(subject)
    prompts = shared.materialize_prompts(DAG_ID)(request)
    go >> [chain["stage"], baseline, prompts]
    prompts >> list(chain["evals"].values())
    for gate in chain["gates"].values():
        baseline >> gate
    evidence = shared.record_evidence(DAG_ID, title="Promote {model_name}:{model_version} to {target_env}")(request)
    list(chain["gates"].values()) >> evidence
    gates_ok = require_gates_passed(evidence)

    approval = PromotionApproval(
        task_id="approval",
        subject="Promote {{ params.model_name }}:{{ params.model_version }} to {{ params.target_env }}?",
        body="{{ ti.xcom_pull(task_ids='record_evidence')['report'] }}",
        assigned_users=[{"id": u, "name": u} for u in APPROVERS],
        response_timeout=RESPONSE_TIMEOUT,
        defaults="Reject",  # silence is a no
        retries=3,  # apache/airflow#72716: an answer within ~250 ms of parking can fail the task
        retry_delay=timedelta(seconds=5),
    )
    gates_ok >> approval

    # -- canary: the candidate takes live traffic behind the gateway, step by step (tollgate.rollout) --
    @task
    def canary_plan(request: dict) -> dict:
        if not request["champion_version"]:
            raise AirflowFailException("no champion to canary against; promote a first champion explicitly")
        return request

    plan = canary_plan(request)
    approval >> plan
    stage_stable = pod_task(PodStep(
        name="stage-stable", command=("python", "-m", "evals.stage"),
        args=("--source", "{{ ti.xcom_pull(task_ids='validate_request')['champion_source'] }}",
              "--dest", c.MODEL_MOUNT_PATH),
        resources=Resources(cpu="2", memory="4Gi"), volume=ModelVolume.for_staging(),
    ), task_id="stage_stable", retries=2)
    canary = rollout.build_progressive_canary(model=NAME, version=VERSION, results_dir=FOLDER,
                                              traffic="{{ params.traffic or '' }}", dag_id=DAG_ID,
                                              gate_file=CANARY_THRESHOLDS)
    plan >> stage_stable >> canary["deploy"]

    @task
    def promote(request: dict, evidence: dict, run_id: str | None = None, ti=None) -> dict:
        decision, who = p.approval_outcome(ti.xcom_pull(task_ids="approval", key=DECISION_KEY))
        if decision != "approved":
            raise AirflowSkipException(f"not approved ({decision})")
        try:  # compare-before-move: never overwrite an alias someone else moved during this run
            return p.promote(request["model_name"], request["model_version"], request["alias"], approver=who,
                             evidence_run_id=evidence["run_id"], canary={"decision": "promote"}, dag_id=DAG_ID,
                             dag_run_id=run_id, expect_from=request["current_target"])
        except AliasConflict as exc:
            ti.xcom_push(key="alias_conflict", value=str(exc))
            raise AirflowFailException(str(exc)) from None

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def finalize(request: dict, run_id: str | None = None, ti=None) -> dict:
        """Say how the promotion ended, and audit every ending that moved nothing."""
        evidence = ti.xcom_pull(task_ids="record_evidence") or {}
        moved = ti.xcom_pull(task_ids="promote")
        if moved:
            return {"outcome": "promoted", **moved}
        decision, who = p.approval_outcome(ti.xcom_pull(task_ids="approval", key=DECISION_KEY))
        conflict = ti.xcom_pull(task_ids="promote", key="alias_conflict")
        if conflict:
            outcome, why = "alias_conflict", conflict
        elif evidence.get("failed_gates"):
            outcome, why = "gate_failed", "; ".join(evidence["failed_gates"])
        elif decision in ("rejected", "timed_out", "no_response"):
            outcome, why = decision, f"approval {decision}"
        else:
            aborted = ti.xcom_pull(task_ids="abort_canary", key=rollout.ABORT_KEY) or {}
            outcome, why = "rolled_back", aborted.get("why") or "canary did not hold; the champion keeps serving"
        record = p.record_no_move(request["model_name"], request["model_version"], request["alias"],
                                  decision=outcome, actor=who, evidence_run_id=evidence.get("run_id"), why=why,
                                  dag_id=DAG_ID, dag_run_id=run_id)
        if outcome != "promoted":
            raise AirflowFailException(f"promotion ended without a move: {outcome} ({why})")
        return record

    promoted = promote(request, evidence)
    canary["rollout"] >> promoted
    done = finalize(request)
    [promoted, canary["abort"]] >> done
