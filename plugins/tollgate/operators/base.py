"""What both backends share: choosing the mode, reading exit codes, publishing outcomes.

A step's exit code says what happened (evals.contract): 0 passed, 1 a gate or check
failed, 2 bad input, anything else is infrastructure (killed, OOM, lost node).
Both backends push it to XCom under ``exit_code`` and fail the task the same way:

- 1 and 2 raise ``TollgateError`` (no retries: the answer will not change), with
  ``.exit_code`` and ``.outcome`` set;
- anything else raises ``AirflowException`` and the task's retries apply.

A DAG tells a failed gate from a broken cluster by ``exit_code`` in XCom (1 vs
missing/other) and by the results file, which exists only when the step judged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow.sdk.exceptions import AirflowException

from evals.contract import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_PASS
from tollgate import constants as c
from tollgate.exceptions import TollgateError

if TYPE_CHECKING:
    from airflow.sdk import Context


def execution_mode(value: str | c.ExecutionMode | None = None) -> c.ExecutionMode:
    """The mode asked for (argument, else TOLLGATE_EXECUTION, else local)."""
    from tollgate import settings

    raw = value if value is not None else settings.current().execution
    try:
        return c.ExecutionMode(raw)
    except ValueError:
        choices = ", ".join(m.value for m in c.ExecutionMode)
        raise TollgateError(f"{c.EXECUTION_ENV}={raw!r} is not one of: {choices}") from None


def outcome_for_exit(exit_code: int | None) -> c.StepOutcome:
    if exit_code == EXIT_PASS:
        return c.StepOutcome.PASSED
    if exit_code == EXIT_FAIL:
        return c.StepOutcome.CHECK_FAILED
    if exit_code == EXIT_BAD_INPUT:
        return c.StepOutcome.BAD_INPUT
    return c.StepOutcome.INFRASTRUCTURE


def raise_for_exit(step_name: str, exit_code: int | None, results: str | None = None) -> None:
    """Fail the task the way the exit code says; return on 0."""
    outcome = outcome_for_exit(exit_code)
    where = f"; results: {results}" if results else ""
    if outcome is c.StepOutcome.PASSED:
        return
    if outcome is c.StepOutcome.CHECK_FAILED:
        raise TollgateError(
            f"step {step_name}: a gate or check failed (exit 1){where}", exit_code=exit_code, outcome=outcome
        )
    if outcome is c.StepOutcome.BAD_INPUT:
        raise TollgateError(
            f"step {step_name}: bad input (exit 2), see the reason on the last log line; nothing was judged",
            exit_code=exit_code,
            outcome=outcome,
        )
    raise AirflowException(f"step {step_name}: infrastructure failure (exit code {exit_code}); retrying may help")


def publish_exit_code(context: Context, exit_code: int | None) -> None:
    """Push the step's exit code (small, always) so downstream tasks can branch on it."""
    if exit_code is not None:
        context["ti"].xcom_push(key=c.XCOM_EXIT_CODE, value=int(exit_code))


@dataclass(frozen=True)
class KubernetesTarget:
    """Which cluster and namespace the kubernetes backend talks to.

    Defaults come from TOLLGATE_K8S_NAMESPACE, TOLLGATE_K8S_CONN_ID,
    TOLLGATE_K8S_IN_CLUSTER and TOLLGATE_K8S_CONFIG_FILE; with none set, the
    Airflow connection ``kubernetes_default`` decides (in-cluster on the official chart).
    """

    namespace: str = c.DEFAULT_NAMESPACE
    conn_id: str | None = c.DEFAULT_K8S_CONN_ID
    in_cluster: bool | None = None
    config_file: str | None = None
    cluster_context: str | None = None

    @classmethod
    def from_env(cls) -> KubernetesTarget:
        from tollgate import settings

        env = settings.current()
        return cls(namespace=env.k8s_namespace, conn_id=env.k8s_conn_id, in_cluster=env.k8s_in_cluster,
                   config_file=env.k8s_config_file)
