"""Fixtures of the MLflow layer's tests: the session's real MLflow server, a fresh model name."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture()
def uri(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    # Nothing may fall back to another server: the env points at the test server too.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return mlflow_server


@pytest.fixture()
def model() -> str:
    return f"orders-{uuid.uuid4().hex[:8]}"
