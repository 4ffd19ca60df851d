"""Start and stop the servers of the embedded default: vLLM, MLflow, and friends.

Each server runs in its own process group (``start_new_session``), listens on
127.0.0.1 only, logs to one known folder (``.tollgate/logs/NAME.log``) and leaves a
pid file in ``.tollgate/run/`` so ``tollgate stop`` can end it by process group
even after the script that started it died. Readiness is polled with a deadline.

    with ManagedServer(vllm_spec(...)) as srv:   # started, ready, stopped on exit
        ...
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evals import settings
from evals.errors import BadInput, CheckFailed, PortInUse

log = logging.getLogger("tollgate.servers")


@dataclass(frozen=True)
class ServerSpec:
    """What to run and how to know it is ready."""

    name: str
    argv: list[str]
    port: int
    health_path: str = "/health"
    port_env: str | None = None
    host: str = settings.LOOPBACK
    env: dict[str, str] = field(default_factory=dict)
    extra_ports: tuple[tuple[int, str | None], ...] = ()
    ready_timeout_s: float = 300.0
    cwd: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_is_listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = settings.LOOPBACK) -> int:
    """A port the OS says is free now (for tests and the local backend)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run_dir() -> Path:
    return settings.home() / "run"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class ManagedServer:
    """A server process in its own process group, stopped by that group."""

    def __init__(self, spec: ServerSpec, log_dir: Path | None = None) -> None:
        self.spec = spec
        self.log_dir = Path(log_dir or settings.log_dir())
        self.log_path = self.log_dir / f"{spec.name}.log"
        self.pid_path = run_dir() / f"{spec.name}-{spec.port}.pid"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> ManagedServer:
        for port, env_var in ((self.spec.port, self.spec.port_env), *self.spec.extra_ports):
            if not port_is_free(self.spec.host, port):
                raise PortInUse(self.spec.host, port, env_var, self.spec.name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.spec.env}
        log.info("starting %s on %s (log: %s)", self.spec.name, self.spec.base_url, self.log_path)
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            logf.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(self.spec.argv)}\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(
                self.spec.argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.spec.cwd,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise BadInput(f"cannot start {self.spec.name}: {exc.filename} not found (run ./tollgate setup)") from None
        finally:
            logf.close()
        self.pid_path.write_text(f"{self.proc.pid}\n")
        return self

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Poll the health URL until it answers 200, the process dies, or the deadline passes."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.spec.ready_timeout_s)
        url = self.spec.base_url + self.spec.health_path
        started = time.monotonic()
        delay = 0.2
        while True:
            code = self.proc.poll()
            if code is not None:
                raise CheckFailed(
                    f"{self.spec.name} exited with code {code} before it was ready; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL we built
                    if resp.status == 200:
                        log.info("%s ready at %s after %.1f s", self.spec.name, self.spec.base_url,
                                 time.monotonic() - started)
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise CheckFailed(
                    f"{self.spec.name} not ready at {url} within {timeout_s or self.spec.ready_timeout_s:.0f} s; "
                    f"see {self.log_path}"
                )
            time.sleep(delay)  # polling interval, bounded by the deadline above
            delay = min(delay * 1.5, 2.0)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after the timeout."""
        if self.proc is None:
            return
        stop_process_group(self.proc.pid, timeout_s=timeout_s, name=self.spec.name)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1)
        self.pid_path.unlink(missing_ok=True)
        self.proc = None

    def __enter__(self) -> ManagedServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader keeps the group "alive" for killpg(0); reap if it is our child.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process_group(pgid: int, timeout_s: float = 30.0, name: str = "server") -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(pgid):
        log.warning("%s (pgid %d) ignored SIGTERM for %.0f s; sending SIGKILL", name, pgid, timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
    log.info("stopped %s (pgid %d)", name, pgid)


def stop_all_recorded() -> int:
    """Stop every server with a pid file under .tollgate/run (used by `tollgate stop`)."""
    stopped = 0
    d = run_dir()
    if not d.exists():
        return 0
    for pid_file in sorted(d.glob("*.pid")):
        try:
            pgid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid_file.unlink(missing_ok=True)
            continue
        if _group_alive(pgid):
            stop_process_group(pgid, name=pid_file.stem)
            stopped += 1
        pid_file.unlink(missing_ok=True)
    return stopped


# -- the servers of the embedded default ----------------------------------------------


def vllm_spec(
    model_dir: str | os.PathLike[str],
    served_name: str,
    port: int | None = None,
    *,
    max_model_len: int = 2048,
    extra_args: Sequence[str] = (),
    name: str = "vllm",
) -> ServerSpec:
    """vLLM's OpenAI-compatible server from the serving environment, on CPU, offline."""
    port = port if port is not None else settings.env_port(settings.VLLM_PORT_VAR, settings.VLLM_PORT_DEFAULT)
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise BadInput(f"model folder {model_dir} has no config.json (run ./tollgate setup to convert SmolLM2)")
    argv = [
        str(settings.serve_python()), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", served_name,
        "--host", settings.LOOPBACK, "--port", str(port),
        "--max-model-len", str(max_model_len),
        "--enforce-eager",  # ~30 s start instead of ~107 s on CPU; no graph capture to win on 2 cores
        "--dtype", "bfloat16",
        "--seed", "0",
        *extra_args,
    ]
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "VLLM_TARGET_DEVICE": "cpu",
        "PYTHONUNBUFFERED": "1",
    }
    return ServerSpec(name=name, argv=argv, port=port, port_env=settings.VLLM_PORT_VAR, env=env,
                      ready_timeout_s=float(os.environ.get("TOLLGATE_VLLM_READY_TIMEOUT", "420")))


def mlflow_spec(port: int | None = None, *, state_dir: Path | None = None, name: str = "mlflow") -> ServerSpec:
    """MLflow tracking + registry server on SQLite, artifacts on the local disk."""
    port = port if port is not None else settings.env_port(settings.MLFLOW_PORT_VAR, settings.MLFLOW_PORT_DEFAULT)
    state = Path(state_dir or settings.home() / "mlflow")
    state.mkdir(parents=True, exist_ok=True)
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    argv = [
        str(mlflow_bin), "server",
        "--host", settings.LOOPBACK, "--port", str(port),
        "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
        "--artifacts-destination", str(state / "artifacts"),
        "--workers", "1",
    ]
    env = {
        "MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1",
        # MLflow 3's job runner (huey consumers for GenAI scorers and prompt optimization)
        # is unused by Tollgate and costs several processes on a 2-core machine.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
    }
    return ServerSpec(name=name, argv=argv, port=port, port_env=settings.MLFLOW_PORT_VAR, env=env,
                      ready_timeout_s=120.0)


AIRFLOW_PORT_VAR, AIRFLOW_PORT_DEFAULT = "TOLLGATE_AIRFLOW_PORT", 8080
AIRFLOW_USERS = {"admin": "admin", "approver": "user", "viewer": "viewer"}


def airflow_env(home: Path, port: int, extra: dict[str, str] | None = None,
                users: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every Airflow process of the embedded default shares (CLI calls too)."""
    venv_bin = Path(sys.executable).parent
    return {
        "AIRFLOW_HOME": str(home),
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(settings.REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{settings.LOOPBACK}:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in (users or AIRFLOW_USERS).items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API__HOST": settings.LOOPBACK,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://{settings.LOOPBACK}:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "TOLLGATE_HOME": str(settings.home()),
        **(extra or {}),
    }


def ensure_airflow_passwords(home: Path, users: dict[str, str] | None = None) -> dict[str, str]:
    """Random per-installation passwords for the SimpleAuthManager users, kept in AIRFLOW_HOME (0600)."""
    import json
    import secrets

    path = home / "passwords.json"
    home.mkdir(parents=True, exist_ok=True)
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = {}
    changed = False
    for user in users or AIRFLOW_USERS:
        if not current.get(user):
            current[user] = secrets.token_urlsafe(12)
            changed = True
    if changed:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(current, fh)
    return current


def airflow_spec(port: int | None = None, *, home: Path | None = None, name: str = "airflow",
                 extra_env: dict[str, str] | None = None, users: dict[str, str] | None = None,
                 api_server_only: bool = False) -> ServerSpec:
    """Airflow 3 on SQLite: api-server, scheduler, dag-processor, triggerer in one process group.

    This is what `airflow standalone` runs, started by hand because standalone's log
    servers bind 0.0.0.0 (ports 8793/8794) and we listen on 127.0.0.1 only: the
    scheduler and triggerer run with --skip-serve-logs and the api-server reads task
    logs from the local files. If one component exits, the group is taken down so the
    failure is seen at once rather than as a half-working UI.

    ``api_server_only`` starts just the UI and REST API over the same metadata DB: what
    tests need beside ``dag.test()``, which schedules and runs the tasks itself.
    """
    port = port if port is not None else settings.env_port(AIRFLOW_PORT_VAR, AIRFLOW_PORT_DEFAULT)
    home = Path(home or settings.home() / "airflow")
    ensure_airflow_passwords(home, users)
    health = f"http://{settings.LOOPBACK}:{port}/api/v2/monitor/health"
    script = (
        "set -u; airflow db migrate >/dev/null || exit 3; "
        f"airflow api-server --host {settings.LOOPBACK} --port {port} --workers 1 & "
        # Tasks report to the api-server's execution API: a scheduler that starts first
        # queues tasks that then fail their first call (seen: a 10 s read timeout, HTTP 400).
        "for _ in $(seq 1 240); do python -c \"import urllib.request as u; "
        f"u.urlopen('{health}', timeout=2)\" 2>/dev/null && break; sleep 1; done; "
        + ("" if api_server_only else
           "airflow scheduler --skip-serve-logs & airflow dag-processor & airflow triggerer --skip-serve-logs & ")
        + "wait -n; code=$?; echo \"an Airflow component exited ($code); stopping the rest\"; kill 0; exit $code"
    )
    return ServerSpec(name=name, argv=["bash", "-c", script], port=port, port_env=AIRFLOW_PORT_VAR,
                      health_path="/api/v2/monitor/health", env=airflow_env(home, port, extra_env, users),
                      ready_timeout_s=240.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.servers", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("stop-all", help="stop every server recorded under .tollgate/run")
    args = parser.parse_args(argv)
    if args.cmd == "stop-all":
        n = stop_all_recorded()
        print(f"stopped {n} server(s)")
    return 0


if __name__ == "__main__":
    from evals._cli import exit_with

    exit_with(main)
