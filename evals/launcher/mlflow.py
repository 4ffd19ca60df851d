"""The MLflow tracking and registry server of the embedded default."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from evals import settings
from evals.launcher.process import ServerSpec


def mlflow_spec(port: int | None = None, *, state_dir: Path | None = None, name: str = "mlflow") -> ServerSpec:
    """MLflow tracking + registry server on SQLite, artifacts on the local disk."""
    port = port if port is not None else settings.current().mlflow_port
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
    return ServerSpec(name=name, argv=argv, port=port, port_env=settings.var_name(settings.Settings, "mlflow_port"), env=env,
                      ready_timeout_s=120.0)
