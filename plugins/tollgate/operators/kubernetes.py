"""The kubernetes backend as DAG files see it: light at parse time, a real pod when it runs.

``KubernetesStepOperator`` holds the ``PodStep`` and Tollgate's production settings and
renders its templates like any operator; only ``execute`` builds the
``KubernetesPodOperator`` (``tollgate.operators.kubernetes_pod.StepPodOperator``) from the
rendered step and delegates to it. The cncf provider and the kubernetes client cost
seconds to import (measured: 4-9 s cold, ``benchmarks/bench_dag_parse.py``), and the
dag-processor parses every file in a fresh child; so they are imported when a pod task
runs (or a test asks for ``pod_operator()``), never while a DAG file is parsed.

Production settings (``kubernetes_pod.PRODUCTION_SETTINGS``): 900 s startup and schedule
timeouts (GPU node scale-up, multi-GB pulls), logs streamed, events logged on failure,
succeeded pods deleted and failed ones kept, re-attach on worker restart, no XCom sidecar.

Run folder via S3: a step with ``handoff`` (its run folder) gets ``/results`` as an
emptyDir and its command wrapped in ``python -m evals.handoff --prefix
$TOLLGATE_RESULTS_URI/<folder> --dir /results/<folder> -- ...``: the pod pulls the folder
(prompts, baseline, earlier results) and pushes what it wrote; the Airflow tasks read
and write the same prefix (``tollgate.resultstore``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from tollgate.exceptions import TollgateError
from tollgate.operators.base import KubernetesTarget
from tollgate.podspec import PodStep, ResultsLocation

if TYPE_CHECKING:
    from airflow.sdk import Context

# KubernetesPodOperator knobs a DAG may pass (the factory drops them in local mode).
POD_ONLY_KWARGS = frozenset({
    "annotations", "affinity", "priority_class_name", "active_deadline_seconds", "image_pull_secrets",
    "startup_timeout_seconds", "schedule_timeout_seconds", "on_finish_action", "get_logs",
    "log_events_on_failure", "reattach_on_restart", "image_pull_policy", "termination_grace_period",
    "poll_interval", "deferrable", "startup_check_interval_seconds", "base_container_status_polling_interval",
    "do_xcom_push",
})


def results_prefix(folder: str | None) -> str | None:
    """``$TOLLGATE_RESULTS_URI/<folder>``: where one run folder lives in kubernetes mode."""
    from tollgate import settings

    if not folder:
        return None
    return f"{settings.current().results_uri.rstrip('/')}/{folder.strip('/')}"


class KubernetesStepOperator(BaseOperator):
    """One ``PodStep`` as a pod; the KubernetesPodOperator is built (and imported) at execute time."""

    template_fields: Sequence[str] = ("image", "arguments", "env_vars", "handoff", "results_uri")
    ui_color = "#e3ecfa"

    def __init__(self, *, step: PodStep, target: KubernetesTarget | None = None,
                 pod_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        pod_kwargs = dict(pod_kwargs or {})
        if pod_kwargs.get("do_xcom_push"):
            raise TollgateError("pod steps return results as files (volume or S3), not through an XCom sidecar")
        super().__init__(**kwargs)
        from tollgate import settings

        self.step = step
        self.target = target or KubernetesTarget.from_env()
        self.pod_kwargs = pod_kwargs
        self.service_account = settings.current().k8s_step_service_account
        self.image = step.image
        self.arguments = list(step.args)
        self.env_vars = dict(step.env)
        self.handoff = step.handoff
        self.results_uri = step.results.uri if step.results else None
        self._pod_operator: Any = None

    def rendered_step(self) -> PodStep:
        """The step with this task's rendered templates (image, args, env, run folder, results file)."""
        results = ResultsLocation(self.results_uri) if self.results_uri else None
        return dataclasses.replace(self.step, image=self.image, args=tuple(self.arguments), env=dict(self.env_vars),
                                   handoff=self.handoff, results=results)

    def pod_operator(self) -> Any:
        """The ``StepPodOperator`` (a KubernetesPodOperator) for the rendered step."""
        from tollgate.operators.kubernetes_pod import StepPodOperator

        step = self.rendered_step()
        self._pod_operator = StepPodOperator(
            task_id=self.task_id, step=step, target=self.target, handoff_prefix=results_prefix(step.handoff),
            service_account=self.service_account, **self.pod_kwargs)
        return self._pod_operator

    def execute(self, context: Context) -> Any:
        return self.pod_operator().execute(context)

    def on_kill(self) -> None:
        if self._pod_operator is not None:
            self._pod_operator.on_kill()


def __getattr__(name: str) -> Any:
    """The pod pieces (``pod_env``, ``container_exit_code``, ...) live in ``kubernetes_pod``; import them on use."""
    if name.startswith("_"):
        raise AttributeError(name)
    from tollgate.operators import kubernetes_pod

    try:
        return getattr(kubernetes_pod, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


__all__ = ["POD_ONLY_KWARGS", "KubernetesStepOperator", "results_prefix"]
