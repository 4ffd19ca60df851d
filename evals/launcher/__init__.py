"""The launcher of the embedded default's servers, and one module per server.

    process.py    ServerSpec, ManagedServer: process groups, loopback ports, pid files, readiness
    vllm.py       vLLM's OpenAI-compatible server (CPU)
    mlflow.py     MLflow tracking + registry
    airflow.py    Airflow 3 (api-server, scheduler, dag-processor, triggerer)
    seaweedfs.py  SeaweedFS, the S3 server (``python -m evals.launcher.seaweedfs``)
    prometheus.py Prometheus (Debian's), file_sd targets, infra/monitoring/rules loaded
    targets.py    register_target / unregister_target: the file_sd JSON per scraped server

``python -m evals.launcher stop-all`` stops every server recorded under .tollgate/run.
"""

from evals.launcher.airflow import (
    AIRFLOW_USERS,
    airflow_env,
    airflow_spec,
    ensure_airflow_passwords,
)
from evals.launcher.mlflow import mlflow_spec
from evals.launcher.process import (
    ManagedServer,
    ServerSpec,
    free_port,
    port_is_free,
    port_is_listening,
    run_dir,
    stop_all_recorded,
    stop_process_group,
    wait_healthy,
)
from evals.launcher.prometheus import prometheus_spec
from evals.launcher.targets import register_target, unregister_name, unregister_target
from evals.launcher.vllm import vllm_spec

__all__ = [
    "AIRFLOW_USERS",
    "ManagedServer",
    "ServerSpec",
    "airflow_env",
    "airflow_spec",
    "ensure_airflow_passwords",
    "free_port",
    "mlflow_spec",
    "port_is_free",
    "port_is_listening",
    "prometheus_spec",
    "register_target",
    "run_dir",
    "stop_all_recorded",
    "stop_process_group",
    "unregister_name",
    "unregister_target",
    "vllm_spec",
    "wait_healthy",
]
