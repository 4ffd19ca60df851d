"""Shared pytest setup. Server fixtures live in tests/fixtures/ (one module per server)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")

pytest_plugins = ["tests.fixtures.airflow", "tests.fixtures.vllm", "tests.fixtures.s3", "tests.fixtures.mlflow"]
