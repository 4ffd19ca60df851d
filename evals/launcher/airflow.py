"""Airflow 3 for the embedded default: its shared environment, the users' password file, the spec.

Nothing here imports Airflow: it runs the ``airflow`` command of the control-plane venv.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from evals import settings
from evals.launcher.process import ServerSpec

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
    port = port if port is not None else settings.current().airflow_port
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
    return ServerSpec(name=name, argv=["bash", "-c", script], port=port, port_env=settings.var_name(settings.Settings, "airflow_port"),
                      health_path="/api/v2/monitor/health", env=airflow_env(home, port, extra_env, users),
                      ready_timeout_s=240.0)
