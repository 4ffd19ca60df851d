"""Tests of plugins/: the test DAG folder, and the session's Airflow metadata DB.

plugins/ as the plugins folder and AIRFLOW_HOME come from tests/fixtures/airflow.py (a root
plugin, so they are set before any test module imports airflow).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures.airflow import PLUGINS, REPO_ROOT  # noqa: F401 - re-exported for the tests here

os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).parent / "dags"))
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")


@pytest.fixture(scope="session")
def airflow_db(migrated_airflow_db: Path) -> Path:
    """A migrated SQLite metadata DB in the session's AIRFLOW_HOME (for dag.test())."""
    return migrated_airflow_db


@pytest.fixture()
def tollgate_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TOLLGATE_HOME per test: volumes/, run/ and logs/ start empty."""
    home = tmp_path / "tollgate-home"
    monkeypatch.setenv("TOLLGATE_HOME", str(home))
    return home
