"""The matrix's MLflow / registry rows, and the Airflow rows about a worker killed mid-task:
the promotion's decision functions (tollgate.promotion, what the DAG's tasks call) against
a real MLflow server this module owns, so that it can stop and restart it mid-run.

Every row also asserts: the champion alias is where it was, or where a fully passed run put
it; every DAG run that started has an ending audit record and none is left pending; no
secret handed to the process reached MLflow's database, artifacts or log.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from evals.contract import SUITES, RunFolder
from evals.launcher import ManagedServer, free_port, mlflow_spec
from tests.faults.invariants import alias_is, every_run_ended, no_secret_in
from tests.faults.matrix import Case, cases
from tests.fixtures.airflow import REPO_ROOT
from tests.fixtures.fault_stub import FaultStub, always

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DAG_ID = "model_promotion"
SHA = "a" * 64


class Mlflow:
    """The module's own MLflow server (SQLite state survives a stop), stoppable mid-test."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.spec = mlflow_spec(free_port(), state_dir=state, name=f"mlflow-faults-{uuid.uuid4().hex[:6]}")
        self.server: ManagedServer | None = None

    @property
    def url(self) -> str:
        return self.spec.base_url

    def start(self) -> None:
        if self.server is None:
            self.server = ManagedServer(self.spec, log_dir=self.state / "logs")
            self.server.start()
            self.server.wait_ready()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout_s=10)
            self.server = None

    def freeze(self, frozen: bool) -> None:
        """SIGSTOP / SIGCONT the server's process group: a hung server (connections accepted, no answer).
        Cheaper than a stop (a restart costs 30+ s on 2 cores), and just as real a fault for a client."""
        assert self.server is not None and self.server.proc is not None
        os.killpg(self.server.proc.pid, signal.SIGSTOP if frozen else signal.SIGCONT)


@pytest.fixture(scope="module")
def mlflow_ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mlflow]:
    ml = Mlflow(tmp_path_factory.mktemp("mlflow-faults"))
    ml.start()
    try:
        yield ml
    finally:
        ml.stop()


@dataclass
class Ctx:
    ml: Mlflow
    model: str
    home: Path
    secrets: list[str]
    runs: list[str] = field(default_factory=list)

    def run_id(self) -> str:
        rid = f"manual__{uuid.uuid4().hex[:10]}"
        self.runs.append(rid)
        return rid

    def folder(self, run_id: str, version: str) -> str:
        from tollgate import promotion as p

        return p.run_folder(DAG_ID, run_id, self.model, version)

    def evidence_files(self, run_id: str, version: str, *, suites: tuple[str, ...] = SUITES,
                       failed: dict[str, list[str]] | None = None) -> str:
        """The files the evaluation chain leaves in the run folder (results + verdict per suite)."""
        from tollgate import promotion as p

        folder = self.folder(run_id, version)
        run = RunFolder(str(p.local_results_dir(folder)))
        for suite in suites:
            Path(run.results(suite)).parent.mkdir(parents=True, exist_ok=True)
            Path(run.results(suite)).write_text(json.dumps({
                "metrics": {"error_rate": 0.0}, "samples": [],
                "meta": {"model": self.model, "version": version, "suite": suite}}))
            bad = (failed or {}).get(suite, [])
            Path(run.verdict(suite)).write_text(json.dumps({"passed": not bad, "failed_gates": bad}))
        return folder

    def evidence(self, run_id: str, version: str, **kw: Any) -> dict[str, Any]:
        from tollgate import promotion as p

        folder = self.evidence_files(run_id, version, **kw)
        return p.record_evidence(self.model, version, dag_id=DAG_ID, dag_run_id=run_id, results_dir=folder,
                                 title="t")

    def promote(self, req: dict[str, Any], run_id: str, evidence_run_id: str | None = None) -> dict[str, Any]:
        from tollgate import promotion as p

        return p.promote(self.model, req["model_version"], req["alias"], approver="approver",
                         evidence_run_id=evidence_run_id, canary={"decision": "promote"}, dag_id=DAG_ID,
                         dag_run_id=run_id, expect_from=req["current_target"])

    def no_move(self, req: dict[str, Any], run_id: str, decision: str, why: str) -> None:
        from tollgate import promotion as p

        p.record_no_move(self.model, req["model_version"], req["alias"], decision=decision, actor="nobody",
                         evidence_run_id=None, why=why, dag_id=DAG_ID, dag_run_id=run_id)


def down(ctx: Ctx, call: Callable[[], Any], how: str = "freeze") -> None:
    """``call`` fails while MLflow is stopped or hung (a retryable infrastructure error), then MLflow is back."""
    if how == "stop":
        ctx.ml.stop()
    else:
        ctx.ml.freeze(True)
    try:
        t0 = time.monotonic()
        with pytest.raises(Exception) as info:
            call()
        assert not isinstance(info.value, AssertionError)
        assert time.monotonic() - t0 < 60, "a call to a dead MLflow hung"
    finally:
        if how == "stop":
            ctx.ml.start()
        else:
            ctx.ml.freeze(False)


def validate(ctx: Ctx, version: str) -> dict[str, Any]:
    from tollgate import promotion as p

    return p.validate_request(ctx.model, version, "production")


# -- the rows ----------------------------------------------------------------------------------------


def down_at_logging(ctx: Ctx) -> None:
    req, rid = validate(ctx, "2"), ctx.run_id()
    folder = ctx.evidence_files(rid, "2")
    from tollgate import promotion as p

    down(ctx, lambda: p.record_evidence(ctx.model, "2", dag_id=DAG_ID, dag_run_id=rid, results_dir=folder, title="t"),
         how="stop")
    alias_is(ctx.model, "champion", "1")
    first = p.record_evidence(ctx.model, "2", dag_id=DAG_ID, dag_run_id=rid, results_dir=folder, title="t")
    again = p.record_evidence(ctx.model, "2", dag_id=DAG_ID, dag_run_id=rid, results_dir=folder, title="t")
    assert first["failed_gates"] == [] and first["run_id"] == again["run_id"], "a retry made a second parent run"
    ctx.promote(req, rid, first["run_id"])
    alias_is(ctx.model, "champion", "2")


def down_at_baseline(ctx: Ctx) -> None:
    from tollgate import promotion as p

    req, rid = validate(ctx, "2"), ctx.run_id()
    folder = ctx.folder(rid, "2")
    down(ctx, lambda: p.fetch_baseline(ctx.model, "1", folder))
    assert not Path(RunFolder(str(p.local_results_dir(folder))).baseline("quality")).exists()
    alias_is(ctx.model, "champion", "1")
    ctx.no_move(req, rid, "no_response", "the run failed before the approval")


def down_at_validate(ctx: Ctx) -> None:
    down(ctx, lambda: validate(ctx, "2"))
    alias_is(ctx.model, "champion", "1")
    assert validate(ctx, "2")["current_target"] == "1"


def down_before_move(ctx: Ctx) -> None:
    req, rid = validate(ctx, "2"), ctx.run_id()
    ev = ctx.evidence(rid, "2")
    down(ctx, lambda: ctx.promote(req, rid, ev["run_id"]))
    alias_is(ctx.model, "champion", "1")
    before = _records(ctx)
    moved = ctx.promote(req, rid, ev["run_id"])  # the task's retry
    assert moved["changed"] is True
    alias_is(ctx.model, "champion", "2")
    assert ctx.promote(req, rid, ev["run_id"])["changed"] is False
    new = [r for r in _records(ctx) if r.record_id not in {b.record_id for b in before}]
    assert [(r.action, r.status, r.to_version) for r in new] == [("move", "applied", "2")]


def alias_moved_by_other(ctx: Ctx) -> None:
    from tollgate.exceptions import AliasConflict
    from tollgate.mlflow import registry

    req, rid = validate(ctx, "2"), ctx.run_id()
    registry.move_alias(ctx.model, "champion", "3", actor="someone-else", reason="their own promotion")
    with pytest.raises(AliasConflict, match="someone else moved it"):
        ctx.promote(req, rid)
    alias_is(ctx.model, "champion", "3")
    ctx.no_move(req, rid, "alias_conflict", "the champion moved during the run")
    assert _records(ctx)[-1].action == "alias_conflict"


def version_deleted(ctx: Ctx) -> None:
    from tollgate.exceptions import RegistryError
    from tollgate.mlflow import tracking

    req, rid = validate(ctx, "2"), ctx.run_id()
    tracking.client().delete_model_version(ctx.model, "2")
    with pytest.raises(RegistryError, match="not registered"):
        ctx.promote(req, rid)
    alias_is(ctx.model, "champion", "1")
    ctx.no_move(req, rid, "failed", "the version was deleted during the run")


def two_race(ctx: Ctx) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from tollgate.exceptions import AliasConflict

    a, b = validate(ctx, "2"), validate(ctx, "3")
    ra, rb = ctx.run_id(), ctx.run_id()
    ctx.promote(a, ra)
    with pytest.raises(AliasConflict):
        ctx.promote(b, rb)
    alias_is(ctx.model, "champion", "2")
    ctx.no_move(b, rb, "alias_conflict", "another promotion moved the champion first")
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "model_promotion.py"))
    assert bag.dags["model_promotion"].max_active_runs == 1


def retry_idempotent(ctx: Ctx) -> None:
    req, rid = validate(ctx, "2"), ctx.run_id()
    assert ctx.promote(req, rid)["changed"] is True
    n = len(_records(ctx))
    assert ctx.promote(req, rid)["changed"] is False
    assert len(_records(ctx)) == n
    alias_is(ctx.model, "champion", "2")


def _gate_failed(ctx: Ctx, ev: dict[str, Any], req: dict[str, Any], rid: str, named: str) -> None:
    from tollgate import promotion as p
    from tollgate.exceptions import GateFailed

    with pytest.raises(GateFailed, match=named):
        p.require_gates_passed(ev)
    ctx.no_move(req, rid, "gate_failed", "; ".join(ev["failed_gates"]))
    alias_is(ctx.model, "champion", "1")


def no_evidence(ctx: Ctx) -> None:
    req, rid = validate(ctx, "2"), ctx.run_id()
    ev = ctx.evidence(rid, "2", suites=("quality",))
    assert any(f.startswith("safety: no results") for f in ev["failed_gates"]), ev["failed_gates"]
    _gate_failed(ctx, ev, req, rid, "latency")


def failed_verdict(ctx: Ctx) -> None:
    req, rid = validate(ctx, "2"), ctx.run_id()
    ev = ctx.evidence(rid, "2", failed={"quality": ["task_success"]})
    _gate_failed(ctx, ev, req, rid, "quality/task_success")


def rollback_external(ctx: Ctx) -> None:
    from tollgate.exceptions import RegistryError
    from tollgate.mlflow import registry, tracking

    tracking.client().set_registered_model_alias(ctx.model, "champion", "3")  # outside Tollgate
    with pytest.raises(RegistryError, match="moved outside Tollgate"):
        registry.rollback_alias(ctx.model, "champion", actor="oncall", reason="rollback")
    alias_is(ctx.model, "champion", "3")


def killed_during_eval(ctx: Ctx) -> None:
    req, rid = validate(ctx, "2"), ctx.run_id()
    folder = ctx.evidence_files(rid, "2", suites=("safety", "latency"))
    from tollgate import promotion as p

    out = RunFolder(str(p.local_results_dir(folder))).results("quality")
    data = Path(out).parent / "q.jsonl"
    data.write_text(json.dumps({"id": "f1", "task": "factual", "prompt": "Capital of France?", "reference": "Paris",
                                "scorer": "regex", "pattern": "paris", "contexts": []}) + "\n")
    with FaultStub(plan=always("stall"), models=("stub-model:1",)) as stub:
        proc = subprocess.Popen([sys.executable, "-m", "evals.run", "--model", "stub-model:1", "--suite", "quality",
                                 "--endpoint", stub.url, "--dataset", str(data), "--output", out],
                                cwd=REPO_ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while stub.requests == 0:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)  # poll the stub, bounded by the deadline
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert not Path(out).exists() and not [f for f in Path(out).parent.iterdir() if f.name.startswith("quality")]
    ev = p.record_evidence(ctx.model, "2", dag_id=DAG_ID, dag_run_id=rid, results_dir=folder, title="t")
    _gate_failed(ctx, ev, req, rid, "quality: no results")


KILL_AT = {
    "before": "from mlflow import MlflowClient\n"
              "MlflowClient.set_registered_model_alias = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n",
    "after": "from tollgate.mlflow import audit\n_orig = audit.set_status\n"
             "def _kill(c, rec, status):\n"
             "    if status == audit.APPLIED:\n        os.kill(os.getpid(), signal.SIGKILL)\n"
             "    return _orig(c, rec, status)\n"
             "audit.set_status = _kill\n",
}


def _killed_promote(ctx: Ctx, req: dict[str, Any], rid: str, at: str) -> None:
    """promote in a worker process that dies (SIGKILL) at ``at`` of the alias move."""
    code = ("import os, signal, json, sys\n" + KILL_AT[at] + "from tollgate import promotion as p\n"
            f"req = json.loads({json.dumps(json.dumps(req))})\n"
            f"p.promote({ctx.model!r}, req['model_version'], req['alias'], approver='approver', evidence_run_id=None, "
            f"canary=None, dag_id={DAG_ID!r}, dag_run_id={rid!r}, expect_from=req['current_target'])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "plugins")})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    mine = [r for r in _records(ctx) if r.dag_run_id == rid]
    assert [r.status for r in mine] == ["pending"], mine


def killed_mid_move(ctx: Ctx) -> None:
    req, rid = validate(ctx, "2"), ctx.run_id()
    _killed_promote(ctx, req, rid, "before")
    alias_is(ctx.model, "champion", "1")
    assert ctx.promote(req, rid)["changed"] is True  # the retry settles the pending record, then moves
    statuses = [r.status for r in _records(ctx) if r.dag_run_id == rid]
    assert statuses == ["failed", "applied"], statuses
    alias_is(ctx.model, "champion", "2")


def killed_after_move(ctx: Ctx) -> None:
    req, rid = validate(ctx, "2"), ctx.run_id()
    _killed_promote(ctx, req, rid, "after")
    alias_is(ctx.model, "champion", "2")  # the move happened, the record says pending
    assert ctx.promote(req, rid)["changed"] is False
    assert [r.status for r in _records(ctx) if r.dag_run_id == rid] == ["applied"]


def _records(ctx: Ctx) -> list[Any]:
    from tollgate.mlflow import registry

    return registry.alias_history(ctx.model, "champion")


IMPL: dict[str, Callable[[Ctx], None]] = {
    "mlflow-down-at-logging": down_at_logging, "mlflow-down-at-baseline": down_at_baseline,
    "mlflow-down-at-validate": down_at_validate, "mlflow-down-before-move": down_before_move,
    "alias-moved-by-other": alias_moved_by_other, "version-deleted": version_deleted,
    "two-promotions-race": two_race, "retry-idempotent": retry_idempotent, "no-evidence": no_evidence,
    "evidence-failed-verdict": failed_verdict, "rollback-after-external-move": rollback_external,
    "worker-killed-during-eval": killed_during_eval, "worker-killed-mid-move": killed_mid_move,
    "worker-killed-after-move": killed_after_move,
}


@pytest.fixture
def ctx(mlflow_ctl: Mlflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ctx:
    from tollgate.mlflow import registry

    mlflow_ctl.start()
    planted = ["sk-" + secrets.token_urlsafe(20), secrets.token_urlsafe(24)]
    env = {"MLFLOW_TRACKING_URI": mlflow_ctl.url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "4", "TOLLGATE_HOME": str(tmp_path / "home"),
           "OPENAI_API_KEY": planted[0], "AWS_SECRET_ACCESS_KEY": planted[1],
           "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    model = f"faults-{uuid.uuid4().hex[:8]}"
    for v in ("1", "2", "3"):
        mv = registry.register_model_version(model, f"s3://tollgate-test/models/{model}/{v}", SHA[:-1] + v)
        assert str(mv.version) == v
    registry.move_alias(model, "champion", "1", actor="test", reason="bootstrap champion")
    return Ctx(mlflow_ctl, model, tmp_path / "home", planted)


@pytest.mark.parametrize("case", cases("test_registry"), ids=lambda c: c.id)
def test_registry(case: Case, ctx: Ctx) -> None:
    IMPL[case.id](ctx)
    ctx.ml.start()
    every_run_ended(ctx.model, ctx.runs, "champion")
    assert no_secret_in(ctx.secrets, paths=[ctx.ml.state]) > 0
