"""The launcher on small real processes: process groups, readiness, port checks, stop-all."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from evals.errors import CheckFailed, PortInUse
from evals.launcher import ManagedServer, ServerSpec, free_port, port_is_listening, process


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TOLLGATE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TOLLGATE_LOG_DIR", raising=False)
    return tmp_path / "home"


def http_server_spec(port: int, name: str = "web", with_child: bool = True) -> ServerSpec:
    # A parent shell that forks a child server: stop() must take the whole group down.
    inner = f"{sys.executable} -m http.server {port} --bind 127.0.0.1"
    argv = ["bash", "-c", f"{inner} & wait"] if with_child else inner.split()
    return ServerSpec(name=name, argv=argv, port=port, health_path="/", port_env="WEB_PORT", ready_timeout_s=30)


def test_start_ready_stop_kills_the_whole_group(isolated_home: Path) -> None:
    port = free_port()
    srv = ManagedServer(http_server_spec(port))
    with srv:
        assert port_is_listening("127.0.0.1", port)
        pgid = srv.proc.pid
        assert os.getpgid(pgid) == pgid
        assert srv.log_path.parent == isolated_home / "logs"
    assert not port_is_listening("127.0.0.1", port)
    assert not process._group_alive(pgid)


def test_taken_port_is_a_one_line_error_naming_port_and_variable() -> None:
    port = free_port()
    with ManagedServer(http_server_spec(port)), pytest.raises(PortInUse) as exc:
        ManagedServer(http_server_spec(port, name="second")).start()
    msg = str(exc.value)
    assert f"127.0.0.1:{port}" in msg and "WEB_PORT" in msg and "\n" not in msg
    assert exc.value.exit_code == 2


def test_a_server_that_dies_fails_fast_with_its_log_tail() -> None:
    spec = ServerSpec(name="dies", argv=["bash", "-c", "echo boom-marker >&2; exit 3"], port=free_port(),
                      ready_timeout_s=60)
    with pytest.raises(CheckFailed) as exc, ManagedServer(spec):
        pass
    assert "exited with code 3" in str(exc.value) and "boom-marker" in str(exc.value)


def test_readiness_deadline() -> None:
    spec = ServerSpec(name="mute", argv=["sleep", "60"], port=free_port(), ready_timeout_s=1)
    srv = ManagedServer(spec).start()
    try:
        with pytest.raises(CheckFailed, match="not ready"):
            srv.wait_ready()
    finally:
        srv.stop()
    assert srv.proc is None


def test_wait_healthy_for_a_server_someone_else_started() -> None:
    import time

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    assert process.wait_healthy(url, time.monotonic() + 0.5) is False  # nothing listens: deadline
    assert process.wait_healthy(url, time.monotonic() + 60, alive=lambda: False) is False  # gave up at once
    with ManagedServer(http_server_spec(port)):
        assert process.wait_healthy(url, time.monotonic() + 10) is True


def test_stop_all_recorded_stops_servers_left_behind(isolated_home: Path) -> None:
    port = free_port()
    srv = ManagedServer(http_server_spec(port)).start()
    srv.wait_ready()
    pgid = srv.proc.pid
    assert process.stop_all_recorded() == 1  # as `./tollgate stop` does, from the pid file alone
    assert not process._group_alive(pgid)
    assert not port_is_listening("127.0.0.1", port)
    assert list((isolated_home / "run").glob("*.pid")) == []


def test_vllm_threads_are_unpinned_and_sized_to_the_machine(monkeypatch) -> None:
    from evals.launcher.vllm import cpu_threads_env

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    assert cpu_threads_env(0, cores=2) == {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"}
    assert cpu_threads_env(0, cores=1)["OMP_NUM_THREADS"] == "1"
    assert cpu_threads_env(0, cores=16)["OMP_NUM_THREADS"] == "8"
    assert cpu_threads_env(3, cores=16)["OMP_NUM_THREADS"] == "3"
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "auto")  # the user's choice wins, with vLLM's own count
    assert cpu_threads_env(0, cores=16) == {}


def test_vllm_spec_carries_the_thread_settings(monkeypatch, tmp_path: Path) -> None:
    from evals.launcher import vllm_spec

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setenv("TOLLGATE_VLLM_CPU_THREADS", "2")
    (tmp_path / "config.json").write_text("{}")
    spec = vllm_spec(tmp_path, "m:1", 8011)
    assert spec.env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind" and spec.env["OMP_NUM_THREADS"] == "2"
