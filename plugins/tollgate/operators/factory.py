"""``pod_task``: one PodStep, one Airflow task, whichever backend TOLLGATE_EXECUTION picks."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from tollgate import constants as c
from tollgate.operators.base import KubernetesTarget, execution_mode
from tollgate.podspec import PodStep

# KubernetesPodOperator knobs a DAG may pass; the local backend has no use for them.
_KUBERNETES_ONLY = frozenset({
    "annotations", "affinity", "priority_class_name", "active_deadline_seconds", "image_pull_secrets",
    "startup_timeout_seconds", "schedule_timeout_seconds", "on_finish_action", "get_logs",
    "log_events_on_failure", "reattach_on_restart", "image_pull_policy", "termination_grace_period",
    "poll_interval", "deferrable", "startup_check_interval_seconds", "base_container_status_polling_interval",
})
# Local-backend knobs the pod has no use for (its image decides the interpreter).
_LOCAL_ONLY = frozenset({"interpreter"})


def pod_task(
    step: PodStep,
    *,
    task_id: str | None = None,
    execution: str | c.ExecutionMode | None = None,
    target: KubernetesTarget | None = None,
    **airflow_kwargs: Any,
) -> BaseOperator:
    """The task for ``step``: a KubernetesPodOperator or a local subprocess, same task_id.

    ``task_id`` defaults to the step name. ``execution`` overrides TOLLGATE_EXECUTION
    (tests use it). ``target`` says which cluster/namespace (kubernetes only; default
    from TOLLGATE_K8S_*). Other keyword arguments go to the operator (retries,
    execution_timeout, trigger_rule, ...); KubernetesPodOperator-only ones are dropped
    in local mode. ``interpreter="serve"`` (local only) runs a ``python`` command with the
    serving environment's interpreter (torch, peft), as the training image would.
    """
    mode = execution_mode(execution)
    task_id = task_id or step.name
    if mode is c.ExecutionMode.KUBERNETES:
        from tollgate.operators.kubernetes import KubernetesStepOperator

        pod_kwargs = {k: v for k, v in airflow_kwargs.items() if k in _KUBERNETES_ONLY or k == "do_xcom_push"}
        task_kwargs = {k: v for k, v in airflow_kwargs.items() if k not in pod_kwargs and k not in _LOCAL_ONLY}
        return KubernetesStepOperator(task_id=task_id, step=step, target=target, pod_kwargs=pod_kwargs,
                                      **task_kwargs)
    from tollgate.operators.local import LocalPodOperator

    local_kwargs = {k: v for k, v in airflow_kwargs.items() if k not in _KUBERNETES_ONLY}
    return LocalPodOperator(task_id=task_id, step=step, **local_kwargs)
