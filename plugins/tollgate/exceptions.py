"""The exception types of Tollgate's Airflow side, under the project's one root.

    evals.errors.TollgateError         every error the project raises on purpose
      tollgate.exceptions.TollgateError  the Airflow side: fails a task without retries
        RegistryError                    a registry operation that cannot be done as asked
          AliasConflict                  the alias moved under a run (someone else promoted): refuse
        GateFailed                       evidence says no; nothing moves
        ApprovalApiError                 Airflow's REST API refused or failed
        BadSetting                       a TOLLGATE_* value that does not parse (exit 2)
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException

from evals.errors import EXIT_BAD_INPUT
from evals.errors import TollgateError as ProjectError
from tollgate.constants import StepOutcome

__all__ = ["AliasConflict", "ApprovalApiError", "BadSetting", "GateFailed", "RegistryError", "TollgateError"]


class TollgateError(AirflowFailException, ProjectError):
    """A step definition is invalid, or a step ran and said no (exit 1) or bad input (exit 2).

    It subclasses ``AirflowFailException`` on purpose: retrying a failed gate or a bad
    input gives the same answer, so the task fails without retries. Infrastructure
    failures (pod not scheduled, OOM kill, lost node) are raised as plain Airflow
    errors and do retry. It also subclasses ``evals.errors.TollgateError``, so one
    ``except`` catches every error either side raises on purpose.

    ``exit_code`` and ``outcome`` are set when a step ran; ``None`` for definition errors.
    """

    exit_code: int | None  # type: ignore[assignment]  # None: no step ran (evals' CLIs never see these)

    def __init__(self, message: str, *, exit_code: int | None = None, outcome: StepOutcome | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.outcome = outcome


class RegistryError(TollgateError):
    """A registry operation that cannot be done as asked (unknown version, bad alias, ...)."""


class AliasConflict(RegistryError):
    """The alias no longer points where the run saw it: someone else moved it. Nothing moves.

    MLflow has no compare-and-set on aliases, so ``move_alias(expect_from=...)`` compares
    right before moving; overwriting another person's promotion would be a wrong promotion.
    """


class GateFailed(TollgateError):
    """Evidence says no: a gate failed or could not decide. Nothing moves."""


class ApprovalApiError(TollgateError):
    """The API refused or failed; `status` is the HTTP status (0 when unreachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class BadSetting(TollgateError):
    """A ``TOLLGATE_*`` environment value does not parse; the message names the variable.

    Bad input (exit 2), and no retry: the same environment gives the same answer.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=EXIT_BAD_INPUT, outcome=StepOutcome.BAD_INPUT)
