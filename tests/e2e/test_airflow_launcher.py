"""The embedded Airflow (api-server, scheduler, dag-processor, triggerer) started by the project's launcher."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from evals.launcher import ManagedServer, airflow_spec, free_port, port_is_listening
from evals.launcher.process import _group_alive
from tests.fixtures.netstat import is_loopback, listening_addresses

pytestmark = pytest.mark.integration


def test_airflow_starts_healthy_on_loopback_only_and_stops(tmp_path: Path) -> None:
    spec = airflow_spec(free_port(), home=tmp_path / "airflow")
    server = ManagedServer(spec, log_dir=tmp_path / "logs")
    with server:
        pgid = server.proc.pid
        # The scheduler starts once the api-server answers; give it a heartbeat or two.
        deadline = time.monotonic() + 90
        while True:
            with urllib.request.urlopen(spec.base_url + "/api/v2/monitor/health", timeout=10) as resp:
                health = json.load(resp)
            if health["scheduler"]["status"] == "healthy" or time.monotonic() > deadline:
                break
            time.sleep(1)  # poll interval, bounded by the deadline
        assert health["metadatabase"]["status"] == "healthy"
        assert health["scheduler"]["status"] == "healthy", health
        listening = listening_addresses(pgid)
        assert (("127.0.0.1", spec.port) in listening), listening
        assert all(is_loopback(host) for host, _ in listening), f"non-loopback listeners: {listening}"
        passwords = json.loads((tmp_path / "airflow" / "passwords.json").read_text())
        assert set(passwords) >= {"admin", "approver"}
        assert (tmp_path / "airflow" / "passwords.json").stat().st_mode & 0o077 == 0
    assert not _group_alive(pgid)
    assert not port_is_listening("127.0.0.1", spec.port)
