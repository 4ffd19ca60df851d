"""Where the embedded default keeps its state, and the defaults every command shares.

All values come from the environment so pods, CI and laptops configure them the
same way; nothing here reads a secret.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """State folder of the embedded default: logs, models, databases, object store data."""
    return Path(os.environ.get("TOLLGATE_HOME", REPO_ROOT / ".tollgate")).resolve()


def log_dir() -> Path:
    return Path(os.environ.get("TOLLGATE_LOG_DIR", home() / "logs"))


def serve_python() -> Path:
    """The interpreter of the serving environment (.venv-serve): vLLM lives only there."""
    return Path(os.environ.get("TOLLGATE_SERVE_PYTHON", REPO_ROOT / ".venv-serve" / "bin" / "python"))


def embedded_model_dir() -> Path:
    """The SmolLM2 safetensors folder made by scripts/convert_smollm2.py."""
    return Path(os.environ.get("TOLLGATE_MODEL_DIR", home() / "models" / "smollm2-135m-instruct"))


def env_port(var: str, default: int) -> int:
    raw = os.environ.get(var)
    if raw is None or raw == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        from evals.errors import BadInput

        raise BadInput(f"{var}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        from evals.errors import BadInput

        raise BadInput(f"{var}={raw!r} is not a port number")
    return port


# Default ports of the embedded default; each one is overridable by the env var named.
VLLM_PORT_VAR, VLLM_PORT_DEFAULT = "TOLLGATE_VLLM_PORT", 8010
MLFLOW_PORT_VAR, MLFLOW_PORT_DEFAULT = "TOLLGATE_MLFLOW_PORT", 5010
LOOPBACK = "127.0.0.1"
