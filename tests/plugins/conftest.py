"""Tests of plugins/: the package on sys.path, a throwaway Airflow home and TOLLGATE_HOME.

Airflow reads AIRFLOW_HOME when it is first imported, so it is set here, at
collection time, before any test module imports airflow. The metadata DB
(SQLite) is migrated once per session, only by tests that need it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGINS = REPO_ROOT / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="tollgate-plugins-tests-"))
if "airflow" not in sys.modules:
    os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).parent / "dags"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
os.environ["TOLLGATE_HOME"] = str(_SESSION_DIR / "tollgate-home")


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB in the session's AIRFLOW_HOME (for dag.test())."""
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )
    assert proc.returncode == 0, f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return home


@pytest.fixture()
def tollgate_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TOLLGATE_HOME per test: volumes/, run/ and logs/ start empty."""
    home = tmp_path / "tollgate-home"
    monkeypatch.setenv("TOLLGATE_HOME", str(home))
    return home


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The session's Airflow home and TOLLGATE_HOME go with the session."""
    import shutil

    shutil.rmtree(_SESSION_DIR, ignore_errors=True)
