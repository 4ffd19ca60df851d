"""Names and defaults shared by the pod steps, their two backends and the model server.

One place for them, so DAG files and manifests never spell a literal twice.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

# plugins/tollgate/constants.py -> the repository (where evals/ and infra/ live)
REPO_ROOT = Path(__file__).resolve().parents[2]


class ExecutionMode(StrEnum):
    """Where a pod step runs: a subprocess on this machine, or a pod in a cluster."""

    LOCAL = "local"
    KUBERNETES = "kubernetes"


class StepOutcome(StrEnum):
    """What a finished step's exit code means (evals.contract: 0 pass, 1 check failed, 2 bad input)."""

    PASSED = "passed"
    CHECK_FAILED = "check_failed"
    BAD_INPUT = "bad_input"
    INFRASTRUCTURE = "infrastructure"  # killed, OOM, image pull, anything not 0/1/2


# -- environment variables ---------------------------------------------------------------
EXECUTION_ENV = "TOLLGATE_EXECUTION"  # local (default) | kubernetes
RESULTS_ENV = "TOLLGATE_RESULTS"  # set in every step: where its results file goes
ENDPOINT_ENV = "TOLLGATE_ENDPOINT"  # the model server under test, read by evals.*
IMAGE_ENV = "TOLLGATE_IMAGE"  # overrides DEFAULT_IMAGE
VLLM_IMAGE_ENV = "TOLLGATE_VLLM_IMAGE"  # overrides DEFAULT_VLLM_IMAGE
K8S_NAMESPACE_ENV = "TOLLGATE_K8S_NAMESPACE"
K8S_CONN_ID_ENV = "TOLLGATE_K8S_CONN_ID"
K8S_IN_CLUSTER_ENV = "TOLLGATE_K8S_IN_CLUSTER"
K8S_CONFIG_FILE_ENV = "TOLLGATE_K8S_CONFIG_FILE"
VLLM_TEMPLATE_DIR_ENV = "TOLLGATE_K8S_TEMPLATES"  # folder with vllm-deployment.yaml / vllm-service.yaml
RESULTS_URI_ENV = "TOLLGATE_RESULTS_URI"  # kubernetes mode: s3:// root of the run folders
STEP_SERVICE_ACCOUNT_ENV = "TOLLGATE_K8S_STEP_SERVICE_ACCOUNT"

DEFAULT_EXECUTION = ExecutionMode.LOCAL
DEFAULT_NAMESPACE = "tollgate"
DEFAULT_K8S_CONN_ID = "kubernetes_default"
DEFAULT_RESULTS_URI = "s3://tollgate/results"
STEP_SERVICE_ACCOUNT = "tollgate-step"  # infra/k8s/base/rbac.yaml: no Role, no token mounted

# -- images ------------------------------------------------------------------------------
DEFAULT_IMAGE = "ghcr.io/tollgate-llmops/tollgate-evals:0.1.0"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"

# -- the model volume --------------------------------------------------------------------
MODEL_PVC = "tollgate-models"  # ReadWriteMany claim, infra/k8s/base/model-pvc.yaml
MODEL_MOUNT_PATH = "/models"  # weights: read-write for staging, read-only otherwise
RESULTS_MOUNT_PATH = "/results"  # the same claim's results/ folder, always writable
RESULTS_SUBPATH = "results"
VOLUME_NAME = "models"
RESULTS_VOLUME_NAME = "results"  # kubernetes mode: /results is an emptyDir the run folder is pulled into from S3
TMP_VOLUME_NAME = "tmp"
TMP_MOUNT_PATH = "/tmp"
TMP_SIZE_LIMIT = "1Gi"
LOCAL_VOLUMES_DIR = "volumes"  # local backend: TOLLGATE_HOME/volumes/<claim> stands in for the claim

# -- security ----------------------------------------------------------------------------
RUN_AS_USER = 1000  # the non-root user of our images
RUN_AS_GROUP = 1000

# -- scheduling --------------------------------------------------------------------------
GPU_RESOURCE = "nvidia.com/gpu"
# A GPU node scale-up (cluster autoscaler or Karpenter) plus a multi-GB image pull
# takes minutes; KubernetesPodOperator's 120 s default fails healthy runs.
STARTUP_TIMEOUT_S = 900
SCHEDULE_TIMEOUT_S = 900
SERVER_READY_TIMEOUT_S = 900

# -- labels ------------------------------------------------------------------------------
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_STEP = "tollgate.dev/step"
LABEL_MODEL = "tollgate.dev/model"
LABEL_MODEL_VERSION = "tollgate.dev/model-version"
PART_OF = "tollgate"

# -- serving -----------------------------------------------------------------------------
VLLM_PORT = 8000  # in the pod; the local backend picks a free loopback port instead
XCOM_EXIT_CODE = "exit_code"
XCOM_RESULTS = "results"
XCOM_SERVER = "server"
