"""Kubernetes mode of the product DAGs: the exact pods, volumes, resources, accounts and the S3 handoff.

The DAG files are parsed with TOLLGATE_EXECUTION=kubernetes; each pod task builds the
KubernetesPodOperator it would run and renders its V1Pod (no cluster needed; the run
against a Kubernetes API is tests/plugins/test_kmock_dag.py). What must hold:

- evaluation, benchmark and gate pods are HTTP clients: CPU and memory, no GPU, no GPU
  toleration, no model claim; their run folder comes from and goes to S3 through
  ``evals.handoff`` (``/results`` is an emptyDir);
- staging is the only step that mounts the claim, read-write; the vLLM server reads it
  and is the one that asks for the GPU;
- every step runs as the steps' ServiceAccount without an API token; credentials are
  secretKeyRef entries (judge key, S3), never values in env or args.
"""

from __future__ import annotations

import pytest
from kubernetes.client import ApiClient

from tests.plugins.conftest import REPO_ROOT
from tollgate import constants as c
from tollgate.operators.kubernetes import KubernetesStepOperator
from tollgate.operators.kubernetes_pod import handoff_results_uri

FOLDER = "{{ run_folder(dag.dag_id, run_id, params.model_name, params.model_version) }}"
RESULTS_URI = "s3://tollgate-prod/run-folders"
S3_SECRETS = {
    "AWS_ACCESS_KEY_ID": {"secretKeyRef": {"name": "tollgate-s3", "key": "access-key-id", "optional": True}},
    "AWS_SECRET_ACCESS_KEY": {"secretKeyRef": {"name": "tollgate-s3", "key": "secret-access-key", "optional": True}},
}
JUDGE_SECRET = {"TOLLGATE_JUDGE_API_KEY": {"secretKeyRef": {"name": "tollgate-judge", "key": "api-key",
                                                            "optional": True}}}
HANDOFF = ["python", "-m", "evals.handoff", "--prefix", f"{RESULTS_URI}/{FOLDER}", "--dir", f"/results/{FOLDER}",
           "--"]
EMPTY_DIRS = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}, {"name": "results", "emptyDir": {"sizeLimit": "1Gi"}}]
EMPTY_MOUNTS = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "results", "mountPath": "/results"}]
# step -> (its own command, resources)
CLIENT_PODS = {
    "eval_quality": (["python", "-m", "evals.run"],
                     {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}),
    "eval_safety": (["python", "-m", "evals.run"],
                    {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}),
    "benchmark_latency": (["python", "-m", "evals.benchmark"],
                          {"requests": {"cpu": "4", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}),
    **{f"gate_{suite}": (["python", "-m", "evals.gate_check"],
                         {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "512Mi"}})
       for suite in ("quality", "safety", "latency")},
}


@pytest.fixture(scope="module")
def pods() -> dict[str, dict[str, dict]]:
    """dag_id -> task_id -> the pod (as the API gets it), parsed in kubernetes mode."""
    from airflow.dag_processing.dagbag import DagBag

    mp = pytest.MonkeyPatch()
    mp.setenv(c.EXECUTION_ENV, "kubernetes")
    mp.setenv(c.RESULTS_URI_ENV, RESULTS_URI)
    mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    mp.delenv("AWS_ENDPOINT_URL", raising=False)
    mp.delenv("AWS_DEFAULT_REGION", raising=False)
    try:
        bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
        assert bag.import_errors == {}
        out: dict[str, dict[str, dict]] = {}
        for dag_id in ("model_promotion", "model_evaluation"):
            for task in bag.dags[dag_id].tasks:
                if isinstance(task, KubernetesStepOperator):
                    pod = task.pod_operator().build_pod_request_obj(dry_run=True)
                    out.setdefault(dag_id, {})[task.task_id] = ApiClient().sanitize_for_serialization(pod)
        return out
    finally:
        mp.undo()


def container(pod: dict) -> dict:
    [ctr] = pod["spec"]["containers"]
    return ctr


def env_of(pod: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(pod)["env"]}


@pytest.mark.parametrize("dag_id", ["model_promotion", "model_evaluation"])
@pytest.mark.parametrize("task_id", sorted(CLIENT_PODS))
def test_client_pods_get_cpu_no_claim_and_their_run_folder_through_s3(pods, dag_id, task_id):
    pod = pods[dag_id][task_id]
    ctr = container(pod)
    command, resources = CLIENT_PODS[task_id]
    assert ctr["command"] == [*HANDOFF, *command]
    assert ctr["resources"] == resources  # no nvidia.com/gpu: they call the model server over HTTP
    assert not pod["spec"].get("tolerations") and not pod["spec"].get("nodeSelector")
    assert pod["spec"]["volumes"] == EMPTY_DIRS  # no PersistentVolumeClaim at all
    assert ctr["volumeMounts"] == EMPTY_MOUNTS
    assert pod["spec"]["serviceAccountName"] == c.STEP_SERVICE_ACCOUNT
    assert pod["spec"]["automountServiceAccountToken"] is False
    env = env_of(pod)
    secrets = {**S3_SECRETS, **(JUDGE_SECRET if task_id.startswith("eval_") else {})}
    assert {k: v for k, v in env.items() if isinstance(v, dict)} == secrets
    output = ctr["args"][ctr["args"].index("--output") + 1]
    assert output.startswith(f"/results/{FOLDER}/") and env[c.RESULTS_ENV] == output
    assert env[c.EXECUTION_ENV] == "kubernetes" and env["HOME"] == "/tmp"


@pytest.mark.parametrize("dag_id", ["model_promotion", "model_evaluation"])
def test_only_staging_writes_the_model_claim(pods, dag_id):
    pod = pods[dag_id]["stage_weights"]
    ctr = container(pod)
    assert ctr["command"] == ["python", "-m", "evals.stage"]  # weights go to the claim, not via handoff
    assert ctr["args"][ctr["args"].index("--dest") + 1] == c.MODEL_MOUNT_PATH
    assert pod["spec"]["volumes"] == [
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "models", "persistentVolumeClaim": {"claimName": c.MODEL_PVC, "readOnly": False}},
    ]
    assert ctr["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"},
                                   {"name": "models", "mountPath": "/models", "readOnly": False}]
    assert ctr["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}
    assert {k: v for k, v in env_of(pod).items() if isinstance(v, dict)} == S3_SECRETS
    assert pod["spec"]["serviceAccountName"] == c.STEP_SERVICE_ACCOUNT
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_no_step_puts_a_credential_in_its_args_or_plain_env(pods):
    for dag_id, tasks in pods.items():
        for task_id, pod in tasks.items():
            ctr = container(pod)
            text = " ".join([*ctr["command"], *ctr.get("args", [])]).upper()
            for word in ("SECRET_ACCESS_KEY=", "API_KEY=", "PASSWORD", "TOKEN="):
                assert word not in text, f"{dag_id}.{task_id}"
            assert not ctr.get("envFrom"), f"{dag_id}.{task_id}"


def test_the_model_server_is_the_one_with_the_gpu_and_reads_the_claim():
    from tollgate.serving import ModelServer
    from tollgate.serving.kubernetes import build_manifests

    deployment, _ = build_manifests(ModelServer(model_name="orders", model_version="3"), "orders", "3", None,
                                    "tollgate")
    pod = deployment["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    assert ctr["resources"]["requests"][c.GPU_RESOURCE] == ctr["resources"]["limits"][c.GPU_RESOURCE] == "1"
    assert [t["key"] for t in pod["tolerations"]] == [c.GPU_RESOURCE]
    claims = [v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims and all(cl["claimName"] == c.MODEL_PVC for cl in claims)
    assert {m["mountPath"]: m.get("readOnly") for m in ctr["volumeMounts"]}[c.MODEL_MOUNT_PATH] is True


def test_the_results_xcom_is_the_s3_url_of_the_file():
    from tollgate.podspec import PodStep, ResultsLocation

    step = PodStep(name="gate-quality", command=("python", "-m", "evals.gate_check"), handoff="dag/run/orders-3",
                   results=ResultsLocation.on_volume("dag/run/orders-3/quality.verdict.json"))
    assert handoff_results_uri(step, "s3://b/results/dag/run/orders-3") == \
        "s3://b/results/dag/run/orders-3/quality.verdict.json"
    assert handoff_results_uri(step, None) == "/results/dag/run/orders-3/quality.verdict.json"


def test_a_handoff_folder_must_stay_below_results():
    from tollgate.exceptions import TollgateError
    from tollgate.podspec import PodStep

    for bad in ("", "/", "a/../../etc"):
        with pytest.raises(TollgateError, match="handoff"):
            PodStep(name="x", command=("true",), handoff=bad)
