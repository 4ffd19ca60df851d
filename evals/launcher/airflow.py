"""Airflow 3 for the embedded default: its shared environment, the users' password file, the spec.

Nothing here imports Airflow: it runs the ``airflow`` command of the control-plane venv.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from evals import settings
from evals.errors import BadInput
from evals.launcher.process import ServerSpec, free_port

AIRFLOW_USERS = {"admin": "admin", "approver": "user", "viewer": "viewer"}


def airflow_env(home: Path, port: int, extra: dict[str, str] | None = None,
                users: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every Airflow process of the embedded default shares (CLI calls too)."""
    venv_bin = Path(sys.executable).parent
    return {
        "AIRFLOW_HOME": str(home),
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
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


COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def airflow_spec(port: int | None = None, *, home: Path | None = None, name: str = "airflow",
                 extra_env: dict[str, str] | None = None, users: dict[str, str] | None = None,
                 api_server_only: bool = False, components: Sequence[str] | None = None,
                 health_port: int | None = None) -> ServerSpec:
    """Airflow 3 on SQLite: api-server, scheduler, dag-processor, triggerer in one process group.

    This is what `airflow standalone` runs, started by hand because standalone's log
    servers bind 0.0.0.0 (ports 8793/8794) and we listen on 127.0.0.1 only: the
    scheduler and triggerer run with --skip-serve-logs and the api-server reads task
    logs from the local files. If one component exits, the group is taken down so the
    failure is seen at once rather than as a half-working UI.

    ``components`` picks a subset of ``COMPONENTS`` for this process group, so that one
    of them can be killed and restarted alone (tests/faults/test_airflow_live.py kills the
    scheduler): ``port`` is always the api-server's, in this group or another one. A
    group with the api-server migrates the DB and is ready when the API answers; a group
    without it must hold the scheduler, waits for the API before starting, and is ready
    when the scheduler's health check (on 127.0.0.1:``health_port``) says its job is alive.
    ``api_server_only`` is ``components=("api-server",)``: the UI and REST API over the
    metadata DB, what tests need beside ``dag.test()``, which runs the tasks itself.
    """
    parts = _components(("api-server",) if api_server_only else components)
    port = port if port is not None else settings.current().airflow_port
    home = Path(home or settings.home() / "airflow")
    ensure_airflow_passwords(home, users)
    health = f"http://{settings.LOOPBACK}:{port}/api/v2/monitor/health"
    started = {
        "api-server": f"airflow api-server --host {settings.LOOPBACK} --port {port} --workers 1 & ",
        "scheduler": "airflow scheduler --skip-serve-logs & ",
        "dag-processor": "airflow dag-processor & ",
        "triggerer": "airflow triggerer --skip-serve-logs & ",
    }
    script = (
        "set -u; "
        + ("airflow db migrate >/dev/null || exit 3; " + started["api-server"] if "api-server" in parts else "")
        # Tasks report to the api-server's execution API: a scheduler that starts first
        # queues tasks that then fail their first call (seen: a 10 s read timeout, HTTP 400).
        + "for _ in $(seq 1 240); do python -c \"import urllib.request as u; "
        f"u.urlopen('{health}', timeout=2)\" 2>/dev/null && break; sleep 1; done; "
        + "".join(started[c] for c in parts if c != "api-server")
        + "wait -n; code=$?; echo \"an Airflow component exited ($code); stopping the rest\"; kill 0; exit $code"
    )
    env = airflow_env(home, port, extra_env, users)
    if "api-server" in parts:
        return ServerSpec(name=name, argv=["bash", "-c", script], port=port,
                          port_env=settings.var_name(settings.Settings, "airflow_port"),
                          health_path="/api/v2/monitor/health", env=env, ready_timeout_s=240.0)
    health_port = health_port if health_port is not None else free_port()
    env.update({"AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": settings.LOOPBACK,
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(health_port)})
    return ServerSpec(name=name, argv=["bash", "-c", script], port=health_port, health_path="/health", env=env,
                      ready_timeout_s=240.0)


def _components(wanted: Sequence[str] | None) -> tuple[str, ...]:
    """``wanted`` checked against COMPONENTS, in their start order (all four when None)."""
    if wanted is None:
        return COMPONENTS
    unknown = sorted(set(wanted) - set(COMPONENTS))
    if unknown or not wanted:
        raise BadInput(f"Airflow components {unknown or 'none'}: choose from {', '.join(COMPONENTS)}")
    if "api-server" not in wanted and "scheduler" not in wanted:
        raise BadInput("an Airflow process group without the api-server needs the scheduler (its health check "
                       "is how the group is known to be ready)")
    return tuple(c for c in COMPONENTS if c in wanted)
