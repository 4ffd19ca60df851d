"""The TaskFlow tasks that ``model_promotion`` and ``model_evaluation`` share, written once.

    request = validate_request()                       # each DAG's own task: a dict with model_name,
                                                       # model_version, champion_version, ...
    prompts = materialize_prompts(DAG_ID)(request)
    baseline = fetch_baseline(DAG_ID)(request)
    evidence = record_evidence(DAG_ID, title="Promote {model_name}:{model_version}")(request)

Each factory returns a ``@task``-decorated callable; the DAG calls it with the request (an
XComArg), so the graph edge and the XCom shapes stay where the DAG can see them. Task ids
are the factories' names. The run folder is found once, here: the same folder the pod
steps get through the DAG's ``run_folder`` macro (``tollgate.promotion.run_folder``); in
kubernetes mode it is synced with its S3 prefix around each task (``tollgate.resultstore``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import task
from airflow.task.trigger_rule import TriggerRule

from tollgate import promotion
from tollgate.exceptions import TollgateError
from tollgate.resultstore import synced

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk import XComArg

    SharedTask = Callable[..., XComArg]  # call it with the request

__all__ = ["fetch_baseline", "materialize_prompts", "record_evidence", "request_folder"]


def _known(run_id: str | None) -> str:
    """Airflow fills ``run_id`` from the task context (it must default to None in the signature)."""
    if not run_id:
        raise TollgateError("no run_id in the task context: this task must run inside a DAG run")
    return run_id


def request_folder(dag_id: str, run_id: str, request: dict[str, Any]) -> str:
    """The run folder of one DAG run's files about the requested version."""
    if not request:  # record_evidence runs ALL_DONE: say why there is nothing, not a TypeError
        raise TollgateError("no request: the request was refused upstream (validate_request), nothing was evaluated")
    return promotion.run_folder(dag_id, run_id, request["model_name"], request["model_version"])


def materialize_prompts(dag_id: str) -> SharedTask:
    """Task ``materialize_prompts``: the version's registered prompt set into the run folder (its path)."""

    @task(task_id="materialize_prompts")
    def _materialize_prompts(request: dict[str, Any], run_id: str | None = None) -> str:
        folder = request_folder(dag_id, _known(run_id), request)
        with synced(folder, push=True):  # kubernetes mode: the eval pods pull it from S3
            return promotion.materialize_prompts(request["model_name"], request["model_version"], folder)

    return _materialize_prompts


def fetch_baseline(dag_id: str) -> SharedTask:
    """Task ``fetch_baseline``: the champion's last results per suite into the run folder ({suite: version})."""

    @task(task_id="fetch_baseline")
    def _fetch_baseline(request: dict[str, Any], run_id: str | None = None) -> dict[str, str]:
        folder = request_folder(dag_id, _known(run_id), request)
        with synced(folder, push=True):  # kubernetes mode: the gate pods pull it from S3
            return promotion.fetch_baseline(request["model_name"], request["champion_version"], folder,
                                            subject_version=request["model_version"])

    return _fetch_baseline


def record_evidence(dag_id: str, *, title: str) -> SharedTask:
    """Task ``record_evidence`` (runs whatever happened upstream): every suite into MLflow, the report back.

    ``title`` heads the report; it is formatted with the request's fields
    (``"Promote {model_name}:{model_version} to {target_env}"``).
    """

    @task(task_id="record_evidence", trigger_rule=TriggerRule.ALL_DONE)
    def _record_evidence(request: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
        folder = request_folder(dag_id, _known(run_id), request)
        with synced(folder, pull=True):  # kubernetes mode: what the pods pushed to S3
            return promotion.record_evidence(request["model_name"], request["model_version"], dag_id=dag_id,
                                             dag_run_id=_known(run_id), results_dir=folder,
                                             title=title.format(**request))

    return _record_evidence
