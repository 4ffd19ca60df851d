"""Serve the model version under test for the length of a DAG run (setup/teardown).

    from tollgate.serving import ModelServer, serve_model, stop_model, endpoint_env
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from tollgate import constants as c
from tollgate.operators.base import KubernetesTarget, execution_mode
from tollgate.serving.base import ModelServer, endpoint_env, endpoint_ref, resource_name, served_name


def serve_model(
    server: ModelServer,
    *,
    task_id: str = "serve_model",
    execution: str | c.ExecutionMode | None = None,
    target: KubernetesTarget | None = None,
    **airflow_kwargs: Any,
) -> BaseOperator:
    """The setup task: start the server, wait for /health, return its endpoint (XCom)."""
    if execution_mode(execution) is c.ExecutionMode.KUBERNETES:
        from tollgate.serving.kubernetes import KubernetesServeModelOperator

        op: BaseOperator = KubernetesServeModelOperator(task_id=task_id, server=server, target=target, **airflow_kwargs)
    else:
        from tollgate.serving.local import LocalServeModelOperator

        op = LocalServeModelOperator(task_id=task_id, server=server, **airflow_kwargs)
    return op


def stop_model(
    server: ModelServer,
    *,
    serve_task: BaseOperator | str = "serve_model",
    task_id: str = "stop_model",
    execution: str | c.ExecutionMode | None = None,
    target: KubernetesTarget | None = None,
    **airflow_kwargs: Any,
) -> BaseOperator:
    """The teardown task. Given the serve task itself, it is wired as that task's teardown."""
    serve_task_id = serve_task if isinstance(serve_task, str) else serve_task.task_id
    if execution_mode(execution) is c.ExecutionMode.KUBERNETES:
        from tollgate.serving.kubernetes import KubernetesStopModelOperator

        op: BaseOperator = KubernetesStopModelOperator(task_id=task_id, server=server, target=target, **airflow_kwargs)
    else:
        from tollgate.serving.local import LocalStopModelOperator

        op = LocalStopModelOperator(task_id=task_id, serve_task_id=serve_task_id, **airflow_kwargs)
    if not isinstance(serve_task, str):
        op.as_teardown(setups=serve_task)
    return op


__all__ = [
    "ModelServer", "endpoint_env", "endpoint_ref", "resource_name", "serve_model", "served_name", "stop_model",
]
