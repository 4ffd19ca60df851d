"""The local backend runs the pod's command for real: exit codes, env, volumes, process groups."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException
from hypothesis import given
from hypothesis import strategies as st

from tollgate import constants as c
from tollgate.exceptions import TollgateError
from tollgate.operators import pod_task
from tollgate.operators.local import LocalPodOperator, map_path
from tollgate.podspec import ModelVolume, PodStep, ResultsLocation, SecretEnv
from tollgate.serving.local import LocalServeModelOperator

SECRET_VALUE = "sk-local-secret-never-logged-4242"


class RecordingTI:
    """Stands in for the task instance: records what the operator publishes."""

    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


def run(op: LocalPodOperator) -> RecordingTI:
    ti = RecordingTI()
    try:
        op.execute({"ti": ti})
    except BaseException as exc:
        exc.ti = ti  # type: ignore[attr-defined]
        raise
    return ti


def py_step(code: str, **overrides) -> PodStep:
    fields = dict(name="step", command=("python", "-c", code), volume=ModelVolume.for_reading())
    fields.update(overrides)
    return PodStep(**fields)


def local_op(step: PodStep, **kwargs) -> LocalPodOperator:
    op = pod_task(step, execution="local", **kwargs)
    assert isinstance(op, LocalPodOperator)
    return op


def wait_for(predicate, timeout_s: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


WRITE_RESULTS = (
    "import json, os, sys; p = os.environ['TOLLGATE_RESULTS']; os.makedirs(os.path.dirname(p), exist_ok=True); "
    "json.dump({'metrics': {'score': 0.9}}, open(p, 'w')); print('judged', flush=True); sys.exit(int(sys.argv[1]))"
)


def test_exit_0_passes_and_publishes_results(tollgate_home: Path):
    step = py_step(WRITE_RESULTS, args=("0",), results=ResultsLocation.on_volume("run-1/quality.json"))
    ti = run(local_op(step))
    expected = tollgate_home / "volumes" / c.MODEL_PVC / "results" / "run-1" / "quality.json"
    assert ti.xcom[c.XCOM_EXIT_CODE] == 0
    assert ti.xcom[c.XCOM_RESULTS] == str(expected)
    assert json.loads(expected.read_text())["metrics"]["score"] == 0.9


def test_exit_1_is_a_failed_check_with_its_results(tollgate_home: Path):
    step = py_step(WRITE_RESULTS, args=("1",), results=ResultsLocation.on_volume("q.json"))
    with pytest.raises(TollgateError, match="a gate or check failed \\(exit 1\\)") as info:
        run(local_op(step))
    assert info.value.exit_code == 1 and info.value.outcome is c.StepOutcome.CHECK_FAILED
    assert info.value.ti.xcom[c.XCOM_EXIT_CODE] == 1
    assert Path(info.value.ti.xcom[c.XCOM_RESULTS]).is_file()  # the verdict survives the failure


def test_exit_2_is_bad_input(tollgate_home: Path):
    step = py_step("import sys; print('error: no such suite', file=sys.stderr); sys.exit(2)")
    with pytest.raises(TollgateError, match="bad input") as info:
        run(local_op(step))
    assert info.value.exit_code == 2 and info.value.outcome is c.StepOutcome.BAD_INPUT
    assert c.XCOM_RESULTS not in info.value.ti.xcom


@pytest.mark.parametrize("code", ["import sys; sys.exit(3)", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
def test_other_exits_are_infrastructure_failures_that_retry(tollgate_home: Path, code: str):
    with pytest.raises(AirflowException, match="infrastructure failure") as info:
        run(local_op(py_step(code)))
    assert not isinstance(info.value, TollgateError)


def test_env_secrets_and_volume_paths_reach_the_child(tollgate_home: Path, monkeypatch, capsys):
    monkeypatch.setenv("JUDGE_API_KEY", SECRET_VALUE)
    monkeypatch.delenv("OPTIONAL_TOKEN", raising=False)
    code = (
        "import json, os, sys; "
        "json.dump({'env': {k: os.environ.get(k) for k in "
        "('SUITE', 'JUDGE_API_KEY', 'OPTIONAL_TOKEN', 'MODEL_DIR', 'TOLLGATE_EXECUTION', 'TOLLGATE_RESULTS')}, "
        "'argv': sys.argv[1:], 'cwd': os.getcwd()}, open(sys.argv[2], 'w')); print('done')"
    )
    step = py_step(
        code,
        args=("--dest", "/results/env.json", "--weights=/models/orders/2", "/modelsX/not-a-mount"),
        env={"SUITE": "quality", "MODEL_DIR": "/models/orders/2"},
        secret_env=(SecretEnv("JUDGE_API_KEY", "judge", "api-key"), SecretEnv("OPTIONAL_TOKEN", "t", "k", optional=True)),
        results=ResultsLocation.on_volume("env-results.json"),
    )
    run(local_op(step))
    task_log = capsys.readouterr().out
    claim = tollgate_home / "volumes" / c.MODEL_PVC
    seen = json.loads((claim / "results" / "env.json").read_text())
    assert seen["env"] == {
        "SUITE": "quality",
        "JUDGE_API_KEY": SECRET_VALUE,
        "OPTIONAL_TOKEN": None,
        "MODEL_DIR": str(claim / "orders" / "2"),
        "TOLLGATE_EXECUTION": "local",
        "TOLLGATE_RESULTS": str(claim / "results" / "env-results.json"),
    }
    assert seen["argv"] == ["--dest", str(claim / "results" / "env.json"), f"--weights={claim}/orders/2",
                            "/modelsX/not-a-mount"]
    assert seen["cwd"] == str(c.REPO_ROOT)
    assert "] done" in task_log or " done " in task_log  # child output streamed into the task log
    assert "running step step locally" in task_log
    assert SECRET_VALUE not in task_log


def test_missing_secret_fails_naming_the_variable_not_a_value(tollgate_home: Path, monkeypatch):
    monkeypatch.delenv("JUDGE_API_KEY", raising=False)
    step = py_step("print('never runs')", secret_env=(SecretEnv("JUDGE_API_KEY", "judge", "api-key"),))
    with pytest.raises(TollgateError, match="JUDGE_API_KEY .*Secret judge, key api-key.* not set"):
        run(local_op(step))


def test_python_means_the_workers_interpreter(tollgate_home: Path):
    op = local_op(py_step("pass"))
    assert op.local_argv()[0] == sys.executable


def test_map_path_rewrites_only_mount_paths(tmp_path: Path):
    mounts = {"/models": tmp_path / "claim", "/results": tmp_path / "claim" / "results"}
    assert map_path("/models", mounts) == str(tmp_path / "claim")
    assert map_path("/results/a/b.json", mounts) == str(tmp_path / "claim" / "results" / "a" / "b.json")
    assert map_path("--output=/results/x.json", mounts) == f"--output={tmp_path}/claim/results/x.json"
    assert map_path("/modelsfoo", mounts) == "/modelsfoo"
    assert map_path("models/x", mounts) == "models/x"
    assert map_path("s3://b/models/x", mounts) == "s3://b/models/x"


def test_kubernetes_only_options_are_dropped_locally(tollgate_home: Path):
    op = local_op(py_step("pass"), startup_timeout_seconds=900, annotations={"a": "b"}, retries=3)
    assert op.retries == 3


def test_on_kill_ends_the_whole_process_group(tollgate_home: Path):
    pids_file = tollgate_home / "volumes" / c.MODEL_PVC / "results" / "pids.json"
    code = (
        "import json, os, subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        "json.dump([os.getpid(), child.pid], open(sys.argv[1] + '.tmp', 'w')); os.rename(sys.argv[1] + '.tmp', sys.argv[1]); "
        "time.sleep(120)"
    )
    op = local_op(py_step(code, args=("/results/pids.json",)), kill_grace_s=5)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run(op)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    thread.start()
    leader, grandchild = wait_for(lambda: pids_file.is_file() and json.loads(pids_file.read_text()),
                                  what="the step to start its grandchild")
    assert pid_alive(leader) and pid_alive(grandchild)
    assert os.getpgid(grandchild) == leader  # the step is its own process group
    op.on_kill()
    wait_for(lambda: not pid_alive(grandchild) and not pid_alive(leader), timeout_s=15, what="the group to die")
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert time.monotonic() - started < 60  # nobody waited for the 120 s sleep
    assert len(errors) == 1 and isinstance(errors[0], AirflowException), errors
    assert not isinstance(errors[0], TollgateError)  # infrastructure: retries apply
    assert "stopped by Airflow" in str(errors[0])


def test_an_error_in_the_task_kills_the_group_too(tollgate_home: Path, monkeypatch):
    """A timeout arrives as an exception inside execute(); the group must not outlive it."""
    pids_file = tollgate_home / "volumes" / c.MODEL_PVC / "results" / "pid"
    code = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); print('started', flush=True); time.sleep(120)"
    op = local_op(py_step(code, args=("/results/pid",)), kill_grace_s=5)

    class Timeout(Exception):
        pass

    def on_line(*args, **kwargs):
        if args and args[-1] == "started":
            raise Timeout()

    monkeypatch.setattr(op.log, "info", on_line)
    with pytest.raises(Timeout):
        run(op)
    pid = int(pids_file.read_text())
    wait_for(lambda: not pid_alive(pid), timeout_s=15, what="the step to be killed")


def test_sigterm_ignoring_step_is_killed_after_the_grace(tollgate_home: Path):
    pids_file = tollgate_home / "volumes" / c.MODEL_PVC / "results" / "stubborn"
    code = (
        "import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
    )
    op = local_op(py_step(code, args=("/results/stubborn",)), kill_grace_s=1)
    thread = threading.Thread(target=lambda: pytest.raises(AirflowException, run, op), daemon=True)
    thread.start()
    pid = int(wait_for(lambda: pids_file.is_file() and pids_file.read_text(), what="the step to start"))
    op.on_kill()
    wait_for(lambda: not pid_alive(pid), timeout_s=15, what="SIGKILL after the grace period")
    thread.join(timeout=15)
    assert not thread.is_alive()


def test_signals_module_is_posix():  # the backend relies on process groups
    assert hasattr(os, "killpg") and hasattr(signal, "SIGKILL")


# -- the same DAG as the kmock test, on the local backend, through dag.test() ---------------------
class StandInServe(LocalServeModelOperator):
    """The real setup operator with its process swapped for a tiny HTTP server.

    ``python -m http.server`` serves the staged model folder, which has a ``health``
    file, so /health answers 200 like vLLM's; start, readiness polling, XCom and
    the process-group stop are the operator's own. (vLLM itself is covered by the
    evals tests; starting it here would cost a minute of CPU per run.)
    """

    def server_spec(self, model_dir: Path, name: str, port: int):
        from evals.errors import BadInput
        from evals.launcher import ServerSpec

        if not (model_dir / "config.json").is_file():
            raise BadInput(f"model folder {model_dir} has no config.json")
        argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(model_dir), str(port)]
        return ServerSpec(name="stand-in-model-server", argv=argv, port=port, ready_timeout_s=30)


def build_local_dag(dag_id: str):
    from tests.plugins.dags.tollgate_pod_steps import build_dag

    return build_dag(dag_id, execution="local",
                     serve_factory=lambda server: StandInServe(task_id="serve_model", server=server))


def assert_server_stopped(dag_run) -> None:
    from tests.plugins.airflow_run import xcom

    info = xcom(dag_run, "serve_model", c.XCOM_SERVER)
    assert info, "the setup task recorded its server"
    wait_for(lambda: not pid_alive(int(info["pgid"])), timeout_s=15, what="the model server to stop")
    assert not Path(info["pid_file"]).exists()


@pytest.mark.usefixtures("airflow_db")
def test_local_dag_runs_steps_against_a_served_model_and_stops_it(tollgate_home: Path):
    from tests.plugins.airflow_run import run_dag_test, task_states, xcom

    dag_run = run_dag_test(build_local_dag("local_pass"))
    assert task_states(dag_run) == dict.fromkeys(
        ["stage-weights", "serve_model", "eval-quality", "gate-check", "stop_model"], "success")
    endpoint = xcom(dag_run, "serve_model")
    assert endpoint.startswith("http://127.0.0.1:")
    results = Path(xcom(dag_run, "eval-quality", c.XCOM_RESULTS))
    assert results.is_relative_to(tollgate_home / "volumes" / c.MODEL_PVC / "results")
    report = json.loads(results.read_text())
    assert report["meta"]["endpoint"] == endpoint  # the eval reached the server the setup started
    assert report["metrics"]["quality_score"] == 0.9
    assert (tollgate_home / "volumes" / c.MODEL_PVC / "orders" / "2" / "config.json").is_file()
    assert xcom(dag_run, "gate-check", c.XCOM_EXIT_CODE) == 0
    assert_server_stopped(dag_run)


@pytest.mark.usefixtures("airflow_db")
def test_local_teardown_stops_the_server_when_an_eval_fails(tollgate_home: Path):
    from tests.plugins.airflow_run import run_dag_test, task_states, xcom

    dag_run = run_dag_test(build_local_dag("local_eval_fails"), run_conf={"eval_exit": 1})
    states = task_states(dag_run)
    assert states["eval-quality"] == "failed"
    assert states["gate-check"] == "upstream_failed"
    assert states["stop_model"] == "success"
    assert xcom(dag_run, "eval-quality", c.XCOM_EXIT_CODE) == 1
    assert_server_stopped(dag_run)


@pytest.mark.usefixtures("airflow_db")
def test_local_gate_failure_is_exit_1_with_its_results(tollgate_home: Path):
    from tests.plugins.airflow_run import run_dag_test, task_states, xcom

    dag_run = run_dag_test(build_local_dag("local_gate_fails"), run_conf={"min_quality": 0.95})
    states = task_states(dag_run)
    assert states["gate-check"] == "failed" and states["stop_model"] == "success"
    assert xcom(dag_run, "gate-check", c.XCOM_EXIT_CODE) == 1
    assert "failed" in str(dag_run.state).lower()
    assert_server_stopped(dag_run)


# -- serve/stop edge cases, without a DAG ------------------------------------------------------
class ServeTI(RecordingTI):
    def xcom_pull(self, task_ids: str, key: str = "return_value"):
        return self.xcom.get(key)


def test_serving_an_unstaged_version_fails_with_the_reason(tollgate_home: Path):
    from tollgate.serving import ModelServer

    op = LocalServeModelOperator(task_id="serve_model", server=ModelServer(model_name="orders", model_version="9"))
    with pytest.raises(TollgateError, match="cannot serve orders:9: .*no config.json"):
        op.execute({"ti": ServeTI()})


def test_a_server_that_dies_before_ready_is_cleaned_up(tollgate_home: Path):
    from evals.errors import CheckFailed
    from evals.launcher import ServerSpec
    from tollgate.serving import ModelServer

    class Crashing(LocalServeModelOperator):
        def server_spec(self, model_dir, name, port):
            return ServerSpec(name="crashing", argv=[sys.executable, "-c", "raise SystemExit(3)"], port=port,
                              ready_timeout_s=30)

    ti = ServeTI()
    op = Crashing(task_id="serve_model", server=ModelServer(model_name="orders", model_version="2"))
    with pytest.raises(CheckFailed, match="exited with code 3 before it was ready"):
        op.execute({"ti": ti})
    assert not Path(ti.xcom[c.XCOM_SERVER]["pid_file"]).exists()


def test_stop_without_a_started_server_does_nothing(tollgate_home: Path):
    from tollgate.serving.local import LocalStopModelOperator

    LocalStopModelOperator(task_id="stop_model").execute({"ti": ServeTI()})  # no XCom: no error


def test_stop_never_kills_a_group_it_has_no_lease_on(tollgate_home: Path):
    """Without the pid file the group id may belong to someone else by now."""
    import subprocess

    from tollgate.serving.local import LocalStopModelOperator

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        ti = ServeTI()
        ti.xcom[c.XCOM_SERVER] = {"pgid": bystander.pid, "pid_file": str(tollgate_home / "run" / "gone.pid")}
        LocalStopModelOperator(task_id="stop_model").execute({"ti": ti})
        assert bystander.poll() is None and pid_alive(bystander.pid)
        # With its lease in place, the same call stops it.
        lease = tollgate_home / "run" / "lease.pid"
        lease.parent.mkdir(parents=True, exist_ok=True)
        lease.write_text(f"{bystander.pid}\n")
        ti.xcom[c.XCOM_SERVER] = {"pgid": bystander.pid, "pid_file": str(lease)}
        LocalStopModelOperator(task_id="stop_model").execute({"ti": ti})
        wait_for(lambda: bystander.poll() is not None, timeout_s=15, what="the leased server to stop")
        assert not lease.exists()
    finally:
        if bystander.poll() is None:
            os.killpg(bystander.pid, signal.SIGKILL)
            bystander.wait(timeout=10)


@pytest.mark.usefixtures("airflow_db")
def test_execution_timeout_in_a_real_task_run_kills_the_step(tollgate_home: Path):
    import datetime

    from airflow.sdk import DAG

    from tests.plugins.airflow_run import run_dag_test, task_states

    pid_file = tollgate_home / "volumes" / c.MODEL_PVC / "results" / "slow.pid"
    code = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
    with DAG(dag_id="local_timeout", schedule=None) as dag:
        pod_task(py_step(code, name="slow-eval", args=("/results/slow.pid",)), execution="local",
                 execution_timeout=datetime.timedelta(seconds=3), kill_grace_s=5)
    started = time.monotonic()
    dag_run = run_dag_test(dag)
    assert task_states(dag_run) == {"slow-eval": "failed"}
    assert time.monotonic() - started < 90  # nobody waited for the 120 s sleep
    pid = int(pid_file.read_text())
    wait_for(lambda: not pid_alive(pid), timeout_s=15, what="the timed-out step to be killed")


@given(st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00"), max_size=40))
def test_map_path_changes_only_what_is_under_a_mount(value: str):
    root = Path("/local/claim")
    mounts = {"/models": root, "/results": root / "results"}
    mapped = map_path(value, mounts)
    flag, sep, body = value.partition("=") if value.startswith("-") and "=" in value else ("", "", value)
    under = [m for m in mounts if body == m or body.startswith(m + "/")]
    if not under:
        assert mapped == value
    else:
        [mount] = under  # /models and /results never both match
        assert mapped == f"{flag}{sep}{mounts[mount]}{body[len(mount):]}"
