"""tollgate.exceptions: one root for the whole project, Airflow's no-retry failure for the Airflow side."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

import evals.errors
from tollgate.constants import StepOutcome
from tollgate.exceptions import ApprovalApiError, GateFailed, RegistryError, TollgateError


@pytest.mark.parametrize("cls", [TollgateError, RegistryError, GateFailed, ApprovalApiError])
def test_every_airflow_side_error_is_under_the_project_root_and_fails_without_retries(cls) -> None:
    assert issubclass(cls, TollgateError)
    assert issubclass(cls, evals.errors.TollgateError)
    assert issubclass(cls, AirflowFailException)
    with pytest.raises(evals.errors.TollgateError, match="boom"):
        raise cls("boom")


def test_constructors_keep_their_attributes() -> None:
    err = TollgateError("gate failed", exit_code=1, outcome=StepOutcome.CHECK_FAILED)
    assert (str(err), err.exit_code, err.outcome) == ("gate failed", 1, StepOutcome.CHECK_FAILED)
    assert TollgateError("bad step").exit_code is None  # a definition error: no step ran
    assert ApprovalApiError("HTTP 403", 403).status == 403
    assert ApprovalApiError("unreachable").status == 0
    assert str(RegistryError("alias 'x' is not one of champion")) == "alias 'x' is not one of champion"


def test_the_errors_live_in_one_module() -> None:
    assert {cls.__module__ for cls in (TollgateError, RegistryError, GateFailed, ApprovalApiError)} == {
        "tollgate.exceptions"}
