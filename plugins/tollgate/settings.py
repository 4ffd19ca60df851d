"""Every ``TOLLGATE_*`` variable the Airflow side reads, in one frozen, validated object.

Built with the same machinery as the pod side's :mod:`evals.settings` (one field per
variable, its default and meaning next to it); DAG files and tasks call
:func:`current`, which reads the environment once per distinct value of it. A bad
value raises :class:`tollgate.exceptions.BadSetting` (bad input, exit 2; the task fails
without retries) naming the variable. Shared variables (``TOLLGATE_HOME``, the MLflow port) stay on the pod
side's object: ``evals_settings()``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from evals import settings as _pod
from evals.errors import BadInput
from evals.settings import choice, env, flag, names, non_negative_int, path, positive_float, positive_int
from tollgate import constants as c
from tollgate.exceptions import BadSetting


@dataclass(frozen=True)
class AirflowSettings:
    """What DAG files, operators and tasks read from the environment."""

    execution: str = env(c.EXECUTION_ENV, c.DEFAULT_EXECUTION.value, "`local` (subprocesses with the model volume "
                         "mapped to `$TOLLGATE_HOME/volumes`, the embedded default) or `kubernetes` "
                         "(KubernetesPodOperator)", choice(*(m.value for m in c.ExecutionMode)))
    thresholds_dir: str = env("TOLLGATE_THRESHOLDS", "thresholds", "folder of gate files: `thresholds` "
                              "(production) or `thresholds/embedded` (the CPU demo profile)")
    canary_thresholds_file: str | None = env("TOLLGATE_CANARY_THRESHOLDS", None, "the canary's gate file "
                                             "(default `$TOLLGATE_THRESHOLDS/canary.yaml`)")
    canary_duration_s: float = env("TOLLGATE_CANARY_DURATION", "900", "longest the canary watches, seconds",
                                   positive_float)
    eval_limit: int = env("TOLLGATE_EVAL_LIMIT", "0", "items per eval suite (0: the whole dataset)",
                          non_negative_int)
    bench_users: int = env("TOLLGATE_BENCH_USERS", "50", "concurrent users of the latency benchmark", positive_int)
    bench_duration_s: float = env("TOLLGATE_BENCH_DURATION", "300", "seconds the latency benchmark runs",
                                  positive_float)
    approvers: tuple[str, ...] = env("TOLLGATE_APPROVERS", "approver", "comma-separated Airflow users who may "
                                     "answer a promotion's approval", names)
    approval_timeout_hours: float = env("TOLLGATE_APPROVAL_TIMEOUT_HOURS", "24", "hours an approval waits; "
                                        "silence is a reject", positive_float)
    notifier: str = env("TOLLGATE_NOTIFIER", "file", "`file`: JSON lines in `$TOLLGATE_HOME/notifications.jsonl` "
                        "and the log; `log`: the log only", choice("file", "log"))
    image: str = env(c.IMAGE_ENV, c.DEFAULT_IMAGE, "image of the step pods (kubernetes mode)")
    vllm_image: str = env(c.VLLM_IMAGE_ENV, c.DEFAULT_VLLM_IMAGE, "image of the model server (kubernetes mode)")
    k8s_namespace: str = env(c.K8S_NAMESPACE_ENV, c.DEFAULT_NAMESPACE, "namespace of the pods (kubernetes mode)")
    k8s_conn_id: str = env(c.K8S_CONN_ID_ENV, c.DEFAULT_K8S_CONN_ID, "Airflow connection of the cluster")
    k8s_in_cluster: bool | None = env(c.K8S_IN_CLUSTER_ENV, None, "true/false: override the connection's "
                                      "in-cluster setting", flag)
    k8s_config_file: str | None = env(c.K8S_CONFIG_FILE_ENV, None, "kubeconfig file (instead of the connection's)")
    k8s_templates: str | None = env(c.VLLM_TEMPLATE_DIR_ENV, None, "folder with vllm-deployment.yaml and "
                                    "vllm-service.yaml (default `infra/k8s`)", path)

    @property
    def canary_thresholds(self) -> str:
        return self.canary_thresholds_file or f"{self.thresholds_dir}/canary.yaml"

    @property
    def approval_timeout(self) -> timedelta:
        return timedelta(hours=self.approval_timeout_hours)


@lru_cache(maxsize=8)
def _cached(key: tuple[tuple[str, str], ...]) -> AirflowSettings:
    try:
        return _pod.load(AirflowSettings, dict(key))
    except BadInput as exc:
        raise BadSetting(str(exc)) from None


def current() -> AirflowSettings:
    """The Airflow side's settings for this process's environment now."""
    return _cached(_pod.snapshot(os.environ))


def evals_settings() -> _pod.Settings:
    """The pod side's settings (TOLLGATE_HOME, ports, ...), which the local backend shares."""
    return _pod.current()
