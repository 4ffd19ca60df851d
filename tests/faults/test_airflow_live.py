"""The matrix's Airflow rows that need a real Airflow: the approval's timeout, and a killed scheduler.

One Airflow for the module, started by the project's launcher in two process groups
(evals.launcher.airflow_spec ``components``): the api-server, dag-processor and triggerer
in one, the scheduler alone in the other, so a row can SIGKILL the scheduler's group and
start a new one. The DAGs are tests/faults/live_dag.py (the promotion's validate ->
[evaluate: the real evals.gate_check, restart DAG only] -> PromotionApproval -> promote ->
finalize, on the real tollgate.promotion functions), copied into a temporary dags folder;
MLflow is the session's real server. Every run of the restart DAG is handed a passing
latency results file (``PASSING``, the metrics of thresholds/latency.yaml). Answers go
through the REST API (tollgate.airflow_api.AirflowApi), as `./tollgate approve` sends them.

On Airflow 3.3 an approval waits in the ``awaiting_input`` state and the *scheduler*
(check_awaiting_input_timeouts, every [scheduler] trigger_timeout_check_interval) applies
its timeout, not the triggerer: the reason dag.test() never timed one out.

Every row asserts the invariants (tests/faults/invariants.py): the alias is what it was or
moved exactly once, every run left an ending audit record with none pending, and no
generated password is in any log the module produced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest

from tests.faults import live_dag
from tests.faults.invariants import alias_is, every_run_ended, no_secret_in
from tests.faults.matrix import Case, cases
from tests.faults.test_airflow import status_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

USERS = {"admin": "admin", "approver": "user"}
TIMEOUT_DAG, RESTART_DAG = live_dag.timeout_dag.dag_id, live_dag.restart_dag.dag_id
DEADLINE_S = 240.0
# Short enough for a test, long enough for a loaded 2-core machine: the scheduler's sweeps and its liveness.
SCHEDULER_ENV = {
    "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",  # the awaiting-input timeout sweep
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "15",  # a killed scheduler's job counts as dead
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "5",  # ... and its running tasks are reset
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
}
# A results file every gate of thresholds/latency.yaml passes (the restart DAG's evaluate judges it).
PASSING: dict[str, Any] = {"metrics": {"latency_p50_ms": 120.0, "latency_p95_ms": 300.0, "latency_p99_ms": 600.0,
                       "requests_per_second": 80.0, "error_rate": 0.0},
           "meta": {"suite": live_dag.SUITE}}
T = TypeVar("T")


def until(what: str, check: Callable[[], T], timeout_s: float = DEADLINE_S) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` past the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.5)  # poll interval, bounded by the deadline above


@dataclass
class Live:
    port: int
    home: Path
    env: dict[str, str]
    logs: Path
    holds: Path
    evidence: Path
    passwords: dict[str, str] = field(default_factory=dict)
    scheduler: Any = None
    starts: int = 0
    orphans: list[int] = field(default_factory=list)

    def as_user(self, user: str) -> Any:
        from tollgate.airflow_api import AirflowApi

        return AirflowApi(f"http://127.0.0.1:{self.port}", user, self.passwords[user])

    def start_scheduler(self) -> None:
        from evals.launcher import ManagedServer, airflow_spec, free_port

        self.starts += 1
        spec = airflow_spec(self.port, home=self.home, name=f"airflow-live-scheduler-{self.port}-{self.starts}",
                            users=USERS, extra_env=self.env, components=("scheduler",), health_port=free_port())
        self.scheduler = ManagedServer(spec, log_dir=self.logs).__enter__()

    def kill_scheduler(self) -> None:
        """SIGKILL the scheduler's whole process group (scheduler, executor workers, task supervisors)."""
        from evals.launcher.process import _group_alive

        pgid = self.scheduler.proc.pid
        os.killpg(pgid, signal.SIGKILL)
        self.scheduler.stop()  # reaps the group leader, removes its pid file
        self.scheduler = None
        assert not _group_alive(pgid), "the scheduler's process group survived SIGKILL"

    def stop(self) -> None:
        from evals.launcher.process import _group_alive, stop_process_group

        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        for pgid in self.orphans:  # task runners a killed scheduler left behind (their own process groups)
            if _group_alive(pgid):
                stop_process_group(pgid, timeout_s=5, name="orphaned task runner")


@pytest.fixture(scope="module")
def live(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from evals.launcher import ManagedServer, airflow_spec, free_port

    dags = tmp_path_factory.mktemp("airflow-live-dags")
    shutil.copy(live_dag.__file__, dags / "faults_live.py")
    env = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([{
            "name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(dags), "refresh_interval": 0}}]),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        **SCHEDULER_ENV,
    }
    ctx = Live(free_port(), tmp_path_factory.mktemp("airflow-live-home"), env,
               tmp_path_factory.mktemp("airflow-live-logs"), tmp_path_factory.mktemp("airflow-live-holds"),
               tmp_path_factory.mktemp("airflow-live-evidence"))
    rest = airflow_spec(ctx.port, home=ctx.home, name=f"airflow-live-{ctx.port}", users=USERS, extra_env=env,
                        components=("api-server", "dag-processor", "triggerer"))
    with pytest.MonkeyPatch.context() as mp, ManagedServer(rest, log_dir=ctx.logs):
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        ctx.passwords = json.loads((ctx.home / "passwords.json").read_text())
        try:
            ctx.start_scheduler()
            admin = ctx.as_user("admin")
            for dag_id in (TIMEOUT_DAG, RESTART_DAG):
                admin.wait_for_dag(dag_id, timeout_s=DEADLINE_S)
            yield ctx
        finally:
            ctx.stop()


def new_model(tag: str) -> str:
    """A model with versions 1 and 2, 1 the champion (an audited bootstrap)."""
    from tollgate.mlflow import registry

    model = f"live-{tag}-{uuid.uuid4().hex[:6]}"
    for v in ("1", "2"):
        registry.register_model_version(model, f"s3://tollgate-test/models/{model}/{v}",
                                        hashlib.sha256(f"{model}/{v}".encode()).hexdigest())
    registry.move_alias(model, "champion", "1", actor="test", reason="bootstrap champion")
    return model


def records(model: str, run_id: str) -> list[Any]:
    from tollgate.mlflow import registry

    return [r for r in registry.alias_history(model, "champion") if r.dag_run_id == run_id]


def applied_moves(model: str) -> list[Any]:
    from tollgate.mlflow import registry

    return [r for r in registry.alias_history(model, "champion") if r.action == "move" and r.status == "applied"
            and r.actor != "test"]


def decision(api: Any, dag_id: str, run_id: str) -> tuple[str, str]:
    from tollgate import promotion as p
    from tollgate.approvals import DECISION_KEY

    return p.approval_outcome(api.xcom(dag_id, run_id, "approval", key=DECISION_KEY))


def task_instance(api: Any, dag_id: str, run_id: str, task_id: str, tail: str = "") -> dict[str, Any]:
    return dict(api.get(f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}{tail}"))


def hitl(api: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    return task_instance(api, dag_id, run_id, "approval", "/-1/hitlDetails")


def approval_of(dag_id: str, run_id: str) -> Any:
    from tollgate.airflow_api import PendingApproval

    return PendingApproval(dag_id, run_id, "approval", -1, "", "", ["Approve", "Reject"], ["approver"])


def results_of(live: Live, model: str) -> Path:
    return live.evidence / f"{model}.{live_dag.SUITE}.json"


def verdict_of(live: Live, model: str, run_id: str) -> Path:
    return live_dag.verdict_path(str(results_of(live, model)), RESTART_DAG, run_id, model, "2")


def trigger(live: Live, dag_id: str, model: str, hold: str = "", eval_hold: str = "") -> str:
    results = results_of(live, model)
    if not results.exists():
        results.write_text(json.dumps({**PASSING, "meta": {**PASSING["meta"], "model": model, "version": "2"}}))
    return str(live.as_user("admin").trigger(dag_id, {"model_name": model, "model_version": "2", "hold": hold,
                                                      "eval_hold": eval_hold, "results": str(results)}))


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class TimedOut:
    model: str
    run_id: str
    state: str
    states: dict[str, str]
    hitl: dict[str, Any]
    records: list[Any]


@pytest.fixture(scope="module")
def timed_out(live: Live) -> TimedOut:
    """One run of the short-timeout DAG that nobody answers, to its end (rows 1 and 2 read it)."""
    model = new_model("timeout")
    admin = live.as_user("admin")
    run_id = trigger(live, TIMEOUT_DAG, model)
    run = admin.wait_for_run(TIMEOUT_DAG, run_id, timeout_s=DEADLINE_S)
    return TimedOut(model, run_id, run["state"], admin.task_states(TIMEOUT_DAG, run_id),
                    hitl(admin, TIMEOUT_DAG, run_id), records(model, run_id))


# -- the rows ------------------------------------------------------------------------------------------


def approval_timeout(live: Live, request: pytest.FixtureRequest) -> None:
    t: TimedOut = request.getfixturevalue("timed_out")
    assert t.state == "failed", t
    assert t.states == {"validate": "success", "approval": "success", "promote": "skipped", "finalize": "failed"}, t
    assert t.hitl["chosen_options"] == ["Reject"] and t.hitl["responded_by_user"] is None, t.hitl
    waited = (_stamp(t.hitl["responded_at"]) - _stamp(t.hitl["created_at"])).total_seconds()
    assert waited >= live_dag.TIMEOUT_S - 1, f"the default was taken after {waited:.1f} s, before the timeout"
    print(f"approval-timeout: the default Reject was applied {waited:.1f} s after the request "
          f"(response_timeout {live_dag.TIMEOUT_S} s)")
    assert decision(live.as_user("admin"), TIMEOUT_DAG, t.run_id) == ("timed_out", "nobody")
    alias_is(t.model, "champion", "1")
    assert [(r.action, r.status, r.actor) for r in t.records] == [("timed_out", "recorded", "nobody")], t.records
    every_run_ended(t.model, [t.run_id], "champion")


def answer_after_timeout(live: Live, request: pytest.FixtureRequest) -> None:
    t: TimedOut = request.getfixturevalue("timed_out")
    approver, admin = live.as_user("approver"), live.as_user("admin")
    status = status_of(lambda: approver.respond(approval_of(TIMEOUT_DAG, t.run_id), "Approve"))
    print(f"approval-answer-after-timeout: PATCH hitlDetails answered HTTP {status}")
    assert status == 409, status
    after = hitl(admin, TIMEOUT_DAG, t.run_id)
    assert (after["chosen_options"], after["responded_by_user"], after["responded_at"]) == \
        (t.hitl["chosen_options"], t.hitl["responded_by_user"], t.hitl["responded_at"]), after
    assert admin.dag_run(TIMEOUT_DAG, t.run_id)["state"] == "failed"
    assert admin.task_states(TIMEOUT_DAG, t.run_id) == t.states
    assert decision(admin, TIMEOUT_DAG, t.run_id) == ("timed_out", "nobody")
    alias_is(t.model, "champion", "1")
    assert records(t.model, t.run_id) == t.records, "an answer after the timeout changed the audit trail"


def judged(verdict: dict[str, Any]) -> dict[str, Any]:
    """A gate_check verdict without its clock (``evaluated_utc``): what was judged, and how."""
    return {k: v for k, v in verdict.items() if k != "evaluated_utc"}


def approval_or_end(admin: Any, run_id: str) -> tuple[str, Any] | None:
    """("approval", pending) once the run's approval is parked, ("ended", state) if the run ends first."""
    pending = admin.pending_approvals(RESTART_DAG, run_id)
    if pending and admin.task_states(RESTART_DAG, run_id).get("approval") == "awaiting_input":
        return "approval", pending[0]
    state = admin.dag_run(RESTART_DAG, run_id)["state"]
    return ("ended", state) if state in ("success", "failed") else None


def killed_during_eval(live: Live, request: pytest.FixtureRequest) -> None:
    from evals.launcher.process import _group_alive

    model = new_model("eval")
    hold = live.holds / model
    approver, admin = live.as_user("approver"), live.as_user("admin")
    started = time.monotonic()
    run_id = trigger(live, RESTART_DAG, model, eval_hold=str(hold))
    verdict = verdict_of(live, model, run_id)
    reached = Path(f"{hold}.reached")
    until("evaluate holding before gate_check", lambda: reached.is_file() and reached.read_text().strip())
    assert admin.task_states(RESTART_DAG, run_id)["evaluate"] == "running"
    runner = int(reached.read_text())
    live.orphans.append(runner)
    live.kill_scheduler()
    killed = time.monotonic()
    survived = _group_alive(runner)
    print(f"scheduler-killed-during-eval: the evaluate task runner (its own process group) survived the kill: "
          f"{survived}")
    # While the scheduler is down: nothing moved, nothing recorded, no approval asked, no verdict yet.
    alias_is(model, "champion", "1")
    assert records(model, run_id) == []
    assert admin.pending_approvals(RESTART_DAG, run_id) == []
    assert admin.task_states(RESTART_DAG, run_id)["approval"] == "none"
    assert not verdict.exists(), "a verdict before gate_check ran"
    Path(f"{hold}.release").touch()
    until("the orphaned task runner to exit", lambda: not _group_alive(runner), timeout_s=60)
    orphan = json.loads(verdict.read_text()) if verdict.exists() else None
    orphan_inode = verdict.stat().st_ino if orphan is not None else None
    print(f"scheduler-killed-during-eval: the orphan exited {time.monotonic() - killed:.1f} s after the kill; "
          f"it wrote a verdict: {orphan is not None}"
          + (f" (passed={orphan['passed']})" if orphan is not None else ""))
    alias_is(model, "champion", "1")
    assert admin.pending_approvals(RESTART_DAG, run_id) == []
    live.start_scheduler()
    restarted = time.monotonic()
    got = until("the approval, or the run's end, after the restart", lambda: approval_or_end(admin, run_id))
    assert got is not None
    if got[0] == "approval":
        approver.respond(got[1], "Approve")
    run = admin.wait_for_run(RESTART_DAG, run_id, timeout_s=DEADLINE_S)
    states = admin.task_states(RESTART_DAG, run_id)
    eval_ti = task_instance(admin, RESTART_DAG, run_id, "evaluate")
    trail = records(model, run_id)
    print(f"scheduler-killed-during-eval: after the restart ({restarted - killed:.1f} s down) the run ended "
          f"{run['state']} in {time.monotonic() - restarted:.1f} s (trigger to end {time.monotonic() - started:.1f} s); "
          f"evaluate {eval_ti['state']} on try {eval_ti['try_number']} ({eval_ti.get('duration')} s); {states}")
    if run["state"] == "success":  # resumed: evaluated again, approved, moved once
        assert got[0] == "approval", got
        assert eval_ti["state"] == "success" and eval_ti["try_number"] >= 2, eval_ti
        assert decision(admin, RESTART_DAG, run_id) == ("approved", "approver")
        assert admin.xcom(RESTART_DAG, run_id, "finalize")["outcome"] == "promoted"
        alias_is(model, "champion", "2")
        moves = applied_moves(model)
        assert [(m.from_version, m.to_version, m.dag_run_id) for m in moves] == [("1", "2", run_id)], moves
        assert [(r.action, r.status) for r in trail] == [("move", "applied")], trail
    else:  # failed closed: no approval asked, nothing moved, one ending record
        assert run["state"] == "failed" and got[0] == "ended", (run, got)
        assert states["promote"] in ("upstream_failed", "failed"), states
        alias_is(model, "champion", "1")
        assert applied_moves(model) == []
        assert [(r.action, r.status) for r in trail] == [("gate_failed", "recorded")], trail
    every_run_ended(model, [run_id], "champion")
    # Idempotent: every evaluation of one results file is the same verdict, in the run's one verdict file.
    def verdict_now() -> tuple[dict[str, Any] | None, int | None, list[str]]:
        files = sorted(f.name for f in verdict.parent.iterdir()) if verdict.parent.is_dir() else []
        if not verdict.exists():
            return None, None, files
        return judged(json.loads(verdict.read_text())), verdict.stat().st_ino, files

    after, inode, files = verdict_now()
    if run["state"] == "success":
        assert after is not None and after["passed"] is True, after
        returned = admin.xcom(RESTART_DAG, run_id, "evaluate")
        assert (returned["passed"], returned["results_sha256"], returned["verdict"]) == \
            (True, after["results_sha256"], str(verdict)), returned
    assert files == ([verdict.name] if after is not None else []), f"not one verdict file: {files}"
    if orphan is not None:
        assert after == judged(orphan), "the retry judged differently from the orphaned try"
        assert inode != orphan_inode, "the retry did not re-evaluate (the orphan's verdict file is unchanged)"
    # ... and evaluate cleared and run again judges the same, replacing the file; nothing else changes.
    assert admin.clear_task(RESTART_DAG, run_id, "evaluate") == ["evaluate"]
    until("the cleared evaluate to run again",
          lambda: task_instance(admin, RESTART_DAG, run_id, "evaluate")["try_number"] > eval_ti["try_number"])
    rerun = admin.wait_for_run(RESTART_DAG, run_id, timeout_s=DEADLINE_S)
    again = task_instance(admin, RESTART_DAG, run_id, "evaluate")
    rejudged, reinode, refiles = verdict_now()
    print(f"scheduler-killed-during-eval: evaluate cleared and re-run: try {again['try_number']} {again['state']}; "
          f"the verdict file replaced: {reinode != inode}, the same verdict: {rejudged == after}")
    assert rerun["state"] == run["state"], (rerun, admin.task_states(RESTART_DAG, run_id))
    assert rejudged == after, "a re-evaluation judged differently"
    assert refiles == files, f"a re-evaluation left other files: {refiles}"
    if after is not None:
        assert reinode != inode, "the cleared evaluate did not re-evaluate (the verdict file is unchanged)"
    alias_is(model, "champion", "2" if run["state"] == "success" else "1")
    assert records(model, run_id) == trail, "a re-evaluation wrote to the audit trail"


def killed_approval_pending(live: Live, request: pytest.FixtureRequest) -> None:
    model = new_model("pending")
    approver, admin = live.as_user("approver"), live.as_user("admin")
    run_id = trigger(live, RESTART_DAG, model)
    pending = approver.wait_for_approval(RESTART_DAG, run_id, timeout_s=DEADLINE_S)
    live.kill_scheduler()
    approver.respond(pending, "Approve")  # accepted with no scheduler: the task is handed its answer
    assert admin.task_states(RESTART_DAG, run_id)["approval"] == "scheduled"
    alias_is(model, "champion", "1")
    assert records(model, run_id) == []
    live.start_scheduler()
    run = admin.wait_for_run(RESTART_DAG, run_id, timeout_s=DEADLINE_S)
    assert run["state"] == "success", (run, admin.task_states(RESTART_DAG, run_id))
    assert decision(admin, RESTART_DAG, run_id) == ("approved", "approver")
    alias_is(model, "champion", "2")
    moves = applied_moves(model)
    assert [(m.from_version, m.to_version, m.dag_run_id) for m in moves] == [("1", "2", run_id)], moves
    every_run_ended(model, [run_id], "champion")


def killed_during_promote(live: Live, request: pytest.FixtureRequest) -> None:
    from evals.launcher.process import _group_alive

    model = new_model("promote")
    hold = live.holds / model
    approver, admin = live.as_user("approver"), live.as_user("admin")
    run_id = trigger(live, RESTART_DAG, model, hold=str(hold))
    approver.respond(approver.wait_for_approval(RESTART_DAG, run_id, timeout_s=DEADLINE_S), "Approve")
    reached = Path(f"{hold}.reached")
    until("promote holding before its move", lambda: reached.is_file() and reached.read_text().strip())
    assert admin.task_states(RESTART_DAG, run_id)["promote"] == "running"
    runner = int(reached.read_text())
    live.orphans.append(runner)
    live.kill_scheduler()
    survived = _group_alive(runner)
    print(f"scheduler-killed-during-promote: the task runner (its own process group) survived the kill: {survived}")
    alias_is(model, "champion", "1")  # nothing half-promoted while the scheduler is down
    Path(f"{hold}.release").touch()
    until("the orphaned task runner to exit", lambda: not _group_alive(runner), timeout_s=60)
    from tollgate.mlflow import registry

    print(f"scheduler-killed-during-promote: after the orphan ended the alias is {registry.get_alias(model, 'champion')}")
    live.start_scheduler()
    run = admin.wait_for_run(RESTART_DAG, run_id, timeout_s=DEADLINE_S)
    assert run["state"] == "success", (run, admin.task_states(RESTART_DAG, run_id))
    promote_ti = task_instance(admin, RESTART_DAG, run_id, "promote")
    print(f"scheduler-killed-during-promote: promote succeeded on try {promote_ti['try_number']}, "
          f"returned {admin.xcom(RESTART_DAG, run_id, 'promote')}")
    assert promote_ti["try_number"] >= 2, "the try the kill orphaned cannot have succeeded"
    assert admin.xcom(RESTART_DAG, run_id, "finalize")["outcome"] == "promoted"
    alias_is(model, "champion", "2")
    moves = applied_moves(model)
    assert [(m.from_version, m.to_version, m.dag_run_id) for m in moves] == [("1", "2", run_id)], moves
    every_run_ended(model, [run_id], "champion")
    # The retry of a promote that already moved: cleared and run again, it changes nothing.
    trail = records(model, run_id)
    assert admin.clear_task(RESTART_DAG, run_id, "promote") == ["promote"]
    until("the cleared promote to run again",
          lambda: task_instance(admin, RESTART_DAG, run_id, "promote")["try_number"] > promote_ti["try_number"])
    run = admin.wait_for_run(RESTART_DAG, run_id, timeout_s=DEADLINE_S)
    assert run["state"] == "success", (run, admin.task_states(RESTART_DAG, run_id))
    assert admin.xcom(RESTART_DAG, run_id, "promote")["changed"] is False
    alias_is(model, "champion", "2")
    assert records(model, run_id) == trail, "a re-run of promote wrote to the audit trail"


IMPL: dict[str, Callable[[Live, pytest.FixtureRequest], None]] = {
    "approval-timeout": approval_timeout, "approval-answer-after-timeout": answer_after_timeout,
    "scheduler-killed-during-eval": killed_during_eval,
    "scheduler-killed-approval-pending": killed_approval_pending,
    "scheduler-killed-during-promote": killed_during_promote,
}


@pytest.mark.parametrize("case", cases("test_airflow_live"), ids=lambda c: c.id)
def test_airflow_live(case: Case, live: Live, request: pytest.FixtureRequest,
                      capsys: pytest.CaptureFixture[str]) -> None:
    IMPL[case.id](live, request)
    cap = capsys.readouterr()
    with capsys.disabled():
        print(cap.out, end="")
    assert no_secret_in(live.passwords.values(), paths=[live.logs, live.home / "logs"],
                        texts=[cap.out, cap.err]) > 0
