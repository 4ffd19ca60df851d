"""Shared pytest setup. Server fixtures live in tests/fixtures/ (one module per server)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Tests never write into the repository's .tollgate/: one throwaway TOLLGATE_HOME per
# session (tests that need their own use monkeypatch). The converted model stays where
# setup put it, so it is pinned before the home moves.
from evals import settings as _settings  # noqa: E402

os.environ.setdefault("TOLLGATE_MODEL_DIR", str(_settings.embedded_model_dir()))
if "TOLLGATE_TEST_KEEP_HOME" not in os.environ:
    import tempfile

    os.environ["TOLLGATE_HOME"] = tempfile.mkdtemp(prefix="tollgate-test-home-")

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")

# Hypothesis' per-example deadline is a timing assertion: on a loaded 2-core machine a
# correct example can take longer than 200 ms. Speed lives in benchmarks/, not here.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("tollgate", deadline=None)
_hypothesis_settings.load_profile("tollgate")

pytest_plugins = ["tests.scheduling", "tests.fixtures.airflow", "tests.fixtures.vllm", "tests.fixtures.s3", "tests.fixtures.mlflow"]
