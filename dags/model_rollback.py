"""model_rollback: put the previous champion back into the stable slot and the alias back.

Triggered by hand (the Airflow UI, or ``./tollgate rollback MODEL [--to VERSION]``) with
Params model_name, to_version (empty: the champion before the last audited move), reason.
A running canary is aborted first. An approver confirms in the UI (Airflow's HITL, the
same role as a promotion's approval) unless the run was started confirmed by the CLI,
which checked that role itself. Who and why land in the alias audit record and the
notifications.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# Named for the dag-processor, which imports a file's airflow.* modules once, before it forks the
# parsing child ([dag_processor] parsing_pre_import_modules): Airflow's TaskFlow machinery and the HITL
# operator the approval builds on are then loaded once, not in every parse of this file.
import airflow.providers.standard.operators.hitl  # noqa: F401
import airflow.sdk.definitions.decorators  # noqa: F401
from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

from evals.contract import MODEL_NAME_PATTERN
from tollgate import settings
from tollgate.approvals import DECISION_KEY, PromotionApproval

DAG_ID = "model_rollback"
SETTINGS = settings.current()

with DAG(
    dag_id=DAG_ID,
    description="Roll a model back to its previous champion (serving and alias)",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["tollgate", "rollback"],
    default_args={"owner": "ml-platform", "retries": 0},
    params={
        "model_name": Param("smollm2-orders", type="string", pattern=MODEL_NAME_PATTERN),
        "to_version": Param("", type="string", description="version to restore (empty: the previous champion)"),
        "reason": Param("", type="string", minLength=1, description="why (kept in the audit record)"),
        "confirmed_by": Param("", type="string", description="set by ./tollgate rollback after its role check; "
                                                            "empty: an approver confirms in the UI"),
    },
    doc_md=__doc__,
) as dag:

    @task.branch
    def needs_confirmation(params: dict | None = None) -> str:
        return "rollback" if params.get("confirmed_by") else "confirm"

    confirm = PromotionApproval(
        task_id="confirm",
        subject="Roll {{ params.model_name }} back{{ ' to ' + params.to_version if params.to_version else '' }}?",
        body="Reason: {{ params.reason }}\n\nA running canary is aborted first; the alias champion moves back.",
        assigned_users=[{"id": u, "name": u} for u in SETTINGS.approvers],
        response_timeout=timedelta(hours=1),
        defaults="Reject",
        retries=3,
        retry_delay=timedelta(seconds=5),
    )

    @task(trigger_rule="none_failed_min_one_success")
    def rollback(params: dict | None = None, run_id: str | None = None, ti=None) -> dict:
        from tollgate import rollout
        from tollgate.promotion import approval_outcome

        who = params.get("confirmed_by")
        if not who:
            decision, who = approval_outcome(ti.xcom_pull(task_ids="confirm", key=DECISION_KEY))
            if decision != "approved":
                raise AirflowFailException(f"rollback not confirmed ({decision})")
        return rollout.rollback(params["model_name"], to_version=params.get("to_version") or None, actor=who,
                                reason=params["reason"], dag_id=DAG_ID, dag_run_id=run_id)

    branch = needs_confirmation()
    done = rollback()
    branch >> [confirm, done]
    confirm >> done
