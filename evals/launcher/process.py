"""The launcher of the embedded default's servers: process groups, ports, pid files, readiness.

Each server runs in its own process group (``start_new_session``), listens on
127.0.0.1 only, logs to one known folder (``.tollgate/logs/NAME.log``) and leaves a
pid file in ``.tollgate/run/`` so ``tollgate stop`` can end it by process group
even after the script that started it died. Readiness is polled with a deadline.

    with ManagedServer(vllm_spec(...)) as srv:   # started, ready, stopped on exit
        ...

The specs of the servers themselves are in evals.launcher.vllm, .mlflow, .airflow
and .seaweedfs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evals import settings
from evals.errors import BadInput, CheckFailed, PortInUse
from evals.launcher import targets

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
    # Prometheus job (evals.launcher.targets.JOBS) this server is scraped under while it runs.
    scrape_job: str | None = None
    scrape_labels: dict[str, str] = field(default_factory=dict)

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
        if self.spec.scrape_job:
            targets.register_target(self.spec.scrape_job, self.pid_path.stem, f"{self.spec.host}:{self.spec.port}",
                                    {"server": self.spec.name, **self.spec.scrape_labels})
        return self

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Poll the health URL until it answers 200, the process dies, or the deadline passes."""
        assert self.proc is not None, "start() first"
        limit = timeout_s if timeout_s is not None else self.spec.ready_timeout_s
        url = self.spec.base_url + self.spec.health_path
        started = time.monotonic()
        proc = self.proc
        if wait_healthy(url, started + limit, alive=lambda: proc.poll() is None):
            log.info("%s ready at %s after %.1f s", self.spec.name, self.spec.base_url, time.monotonic() - started)
            return
        code = proc.poll()
        if code is not None:
            raise CheckFailed(
                f"{self.spec.name} exited with code {code} before it was ready; "
                f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
            )
        raise CheckFailed(f"{self.spec.name} not ready at {url} within {limit:.0f} s; see {self.log_path}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after the timeout."""
        if self.proc is None:
            return
        if self.spec.scrape_job:
            targets.unregister_target(self.spec.scrape_job, self.pid_path.stem)
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


def wait_healthy(url: str, deadline: float, *, alive: Callable[[], bool] | None = None) -> bool:
    """Poll ``url`` until it answers 200 (True), ``alive()`` turns False or the monotonic ``deadline`` passes (False).

    The one health poll of the project: our own servers (:meth:`ManagedServer.wait_ready`)
    and servers someone else started (the shared test vLLM of scripts/run_tests.py).
    """
    delay = 0.2
    while alive is None or alive():
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL we built
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)  # polling interval, bounded by the deadline above
        delay = min(delay * 1.5, 2.0)
    return False


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
        targets.unregister_name(pid_file.stem)
        pid_file.unlink(missing_ok=True)
    return stopped


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evals.launcher stop-all``."""
    parser = argparse.ArgumentParser(prog="python -m evals.launcher", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("stop-all", help="stop every server recorded under .tollgate/run")
    args = parser.parse_args(argv)
    if args.cmd == "stop-all":
        n = stop_all_recorded()
        print(f"stopped {n} server(s)")
    return 0
