"""The one exception type of Tollgate's Airflow side."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException

from tollgate.constants import StepOutcome


class TollgateError(AirflowFailException):
    """A step definition is invalid, or a step ran and said no (exit 1) or bad input (exit 2).

    It subclasses ``AirflowFailException`` on purpose: retrying a failed gate or a bad
    input gives the same answer, so the task fails without retries. Infrastructure
    failures (pod not scheduled, OOM kill, lost node) are raised as plain Airflow
    errors and do retry.

    ``exit_code`` and ``outcome`` are set when a step ran; ``None`` for definition errors.
    """

    def __init__(self, message: str, *, exit_code: int | None = None, outcome: StepOutcome | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.outcome = outcome
