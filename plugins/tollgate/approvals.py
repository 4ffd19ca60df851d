"""The promotion approval: Airflow's ApprovalOperator that also records the decision.

ApprovalOperator's own return value does not reach XCom when the answer is Reject (the
task skips its downstream instead), yet the promotion must audit *every* answer: who
said what, and when. So the decision is pushed under its own XCom key before the
operator acts on it.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

DECISION_KEY = "decision"


class PromotionApproval(ApprovalOperator):
    """ApprovalOperator + XCom ``decision``: chosen_options, responded_by_user, responded_at."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" in event:
            decision = {"error_type": event.get("error_type"), "chosen_options": None, "responded_by_user": None}
        else:
            decision = {
                "chosen_options": list(event.get("chosen_options") or []),
                "responded_by_user": event.get("responded_by_user"),
                "responded_at": str(event.get("responded_at")),
            }
        context["ti"].xcom_push(key=DECISION_KEY, value=decision)
        return super().execute_complete(context, event)
