"""The matrix's Airflow approval rows, through the real REST API of an api-server over the
session's metadata DB: a one-task DAG with the promotion's own approval operator
(tollgate.approvals.PromotionApproval, as model_promotion uses it) runs under dag.test()
while another thread answers as the UI or `./tollgate approve` would.

Every row also asserts: the decision the promotion reads (promotion.approval_outcome of the
recorded XCom) is the one the row expects, and no generated password appears in any log.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.faults.invariants import no_secret_in
from tests.faults.matrix import Case, cases

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

USERS = {"admin": "admin", "approver": "user", "intruder": "user", "viewer": "viewer"}
DAG_ID = "faults_approval"


@dataclass
class Api:
    url: str
    passwords: dict[str, str]
    logs: list[Path]

    def as_user(self, user: str) -> Any:
        from tollgate.airflow_api import AirflowApi

        return AirflowApi(self.url, user, self.passwords[user])


@pytest.fixture(scope="module")
def api(migrated_airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    from evals.launcher import ManagedServer, airflow_spec, free_port
    from tollgate.airflow_api import AirflowApi  # noqa: F401 - initialise Airflow (its logging) in this process
    # before the api-server writes its config into the shared AIRFLOW_HOME

    logs = tmp_path_factory.mktemp("airflow-faults-logs")
    home = migrated_airflow_db
    spec = airflow_spec(free_port(), home=home, name=f"airflow-api-faults-{uuid.uuid4().hex[:6]}", users=USERS,
                        api_server_only=True)
    with ManagedServer(spec, log_dir=logs):
        passwords = json.loads((home / "passwords.json").read_text())
        yield Api(spec.base_url, passwords, [logs, home / "logs"])


def approval_dag(timeout_s: float) -> Any:
    from airflow.sdk import DAG

    from tollgate.approvals import PromotionApproval

    with DAG(dag_id=DAG_ID, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        PromotionApproval(task_id="approval", subject="Promote faults:2?", body="evidence",
                          assigned_users=[{"id": "approver", "name": "approver"}],
                          response_timeout=timedelta(seconds=timeout_s), defaults="Reject")
    return dag


@dataclass
class Run:
    dag_run: Any = None
    answers: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def run_approval(api: Api, answer: Callable[[Any, Run], None] | None, timeout_s: float = 120) -> Run:
    """dag.test() the approval DAG; ``answer(pending, run)`` runs in another thread once it is pending."""
    from tests.plugins.airflow_run import run_dag_test

    out = Run()
    over = threading.Event()

    def respond() -> None:
        try:
            approver = api.as_user("approver")
            while not over.is_set():
                pending = [p for p in approver.pending_approvals(DAG_ID) if p.task_id == "approval"]
                if pending:
                    assert answer is not None
                    answer(pending[0], out)
                    return
                over.wait(0.3)  # poll the REST API until the run parks on the approval
        except Exception as exc:  # surfaced by the test
            out.error = repr(exc)

    thread = threading.Thread(target=respond, daemon=True) if answer is not None else None
    if thread is not None:
        thread.start()
    try:
        out.dag_run = run_dag_test(approval_dag(timeout_s))
    finally:
        over.set()
    if thread is not None:
        thread.join(timeout=60)
    assert out.error is None, out.error
    return out


def decision(run: Run) -> tuple[str, str]:
    from tests.plugins.airflow_run import xcom
    from tollgate import promotion as p
    from tollgate.approvals import DECISION_KEY

    return p.approval_outcome(xcom(run.dag_run, "approval", key=DECISION_KEY))


def status_of(call: Callable[[], Any]) -> int:
    from tollgate.exceptions import ApprovalApiError

    try:
        call()
    except ApprovalApiError as exc:
        return exc.status
    return 200


# -- the rows ------------------------------------------------------------------------------------------


def answered_twice(api: Api) -> None:
    def answer(pending: Any, run: Run) -> None:
        approver = api.as_user("approver")
        approver.respond(pending, "Approve")
        run.answers["second"] = status_of(lambda: approver.respond(pending, "Reject"))

    run = run_approval(api, answer)
    assert run.answers["second"] == 409, run.answers
    assert decision(run) == ("approved", "approver")


def unassigned(api: Api) -> None:
    def answer(pending: Any, run: Run) -> None:
        run.answers["intruder"] = status_of(lambda: api.as_user("intruder").respond(pending, "Approve"))
        api.as_user("approver").respond(pending, "Reject")

    run = run_approval(api, answer)
    assert run.answers["intruder"] == 403, run.answers
    assert decision(run) == ("rejected", "approver")


def admin_not_approver(api: Api) -> None:
    def answer(pending: Any, run: Run) -> None:
        run.answers["viewer"] = status_of(lambda: api.as_user("viewer").respond(pending, "Approve"))
        run.answers["admin"] = status_of(lambda: api.as_user("admin").respond(pending, "Approve"))
        api.as_user("approver").respond(pending, "Reject")

    run = run_approval(api, answer)
    assert run.answers["viewer"] == 403, run.answers
    assert run.answers["admin"] == 403, run.answers
    assert decision(run) == ("rejected", "approver")


def bad_option(api: Api) -> None:
    def answer(pending: Any, run: Run) -> None:
        run.answers["bad"] = status_of(lambda: api.as_user("approver").respond(pending, "Approve please"))
        api.as_user("approver").respond(pending, "Reject")

    run = run_approval(api, answer)
    assert 400 <= run.answers["bad"] < 500, run.answers
    assert decision(run) == ("rejected", "approver")


IMPL: dict[str, Callable[[Api], None]] = {
    "approval-answered-twice": answered_twice, "approval-unassigned-user": unassigned,
    "approval-admin-not-approver": admin_not_approver, "approval-bad-option": bad_option,
}


@pytest.mark.parametrize("case", cases("test_airflow"), ids=lambda c: c.id)
def test_airflow(case: Case, api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    IMPL[case.id](api)
    cap = capsys.readouterr()
    no_secret_in(api.passwords.values(), paths=api.logs, texts=[cap.out, cap.err])
