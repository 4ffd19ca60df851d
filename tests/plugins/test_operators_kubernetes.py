"""The kubernetes backend renders the pod a production cluster should get (no cluster needed)."""

from __future__ import annotations

import json

import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from tollgate import constants as c
from tollgate.exceptions import TollgateError
from tollgate.operators import KubernetesTarget, outcome_for_exit, pod_task
from tollgate.operators.base import raise_for_exit
from tollgate.operators.kubernetes import KubernetesStepOperator, container_exit_code
from tollgate.operators.local import LocalPodOperator
from tollgate.podspec import ModelVolume, PodStep, Resources, ResultsLocation, SecretEnv, Toleration
from tollgate.serving import ModelServer, serve_model, stop_model
from tollgate.serving.kubernetes import build_manifests

SECRET_VALUE = "sk-this-must-never-appear-in-a-pod-spec"
TARGET = KubernetesTarget(namespace="tollgate-test", conn_id=None)


def eval_step(**overrides) -> PodStep:
    fields = dict(
        name="eval-quality",
        command=("python", "-m", "evals.run"),
        args=("--model", "orders:2", "--suite", "quality", "--output", "/results/quality.json"),
        env={"TOLLGATE_LOG_LEVEL": "INFO"},
        secret_env=(SecretEnv("OPENAI_API_KEY", secret="judge-llm", key="api-key"),),
        resources=Resources(cpu="2", memory="8Gi", gpu=1),
        tolerations=(Toleration.gpu(),),
        node_selector={"nvidia.com/gpu.present": "true"},
        volume=ModelVolume.for_reading(),
        results=ResultsLocation.on_volume("quality.json"),
    )
    fields.update(overrides)
    return PodStep(**fields)


def stage_step() -> PodStep:
    return PodStep(
        name="stage-weights",
        command=("python", "-m", "evals.stage"),
        args=("--source", "s3://models/orders/2", "--dest", "/models/orders/2"),
        secret_env=(
            SecretEnv("AWS_ACCESS_KEY_ID", secret="s3-credentials", key="access-key-id"),
            SecretEnv("AWS_SECRET_ACCESS_KEY", secret="s3-credentials", key="secret-access-key"),
        ),
        volume=ModelVolume.for_staging(),
    )


def render(step: PodStep, **kwargs) -> k8s.V1Pod:
    op = pod_task(step, execution="kubernetes", target=TARGET, **kwargs)
    return op.pod_operator().build_pod_request_obj(dry_run=True)


def container(pod: k8s.V1Pod) -> k8s.V1Container:
    assert len(pod.spec.containers) == 1, "no XCom sidecar, no extra containers"
    return pod.spec.containers[0]


def mounts(pod: k8s.V1Pod) -> dict[str, k8s.V1VolumeMount]:
    return {m.mount_path: m for m in container(pod).volume_mounts}


def test_factory_picks_the_backend_and_keeps_the_task_id(monkeypatch):
    step = eval_step()
    monkeypatch.setenv(c.EXECUTION_ENV, "kubernetes")
    remote = pod_task(step, target=TARGET)
    monkeypatch.setenv(c.EXECUTION_ENV, "local")
    local = pod_task(step)
    monkeypatch.delenv(c.EXECUTION_ENV)
    default = pod_task(step)
    # The DAG holds the light operator; the KubernetesPodOperator exists only once it runs.
    assert isinstance(remote, KubernetesStepOperator) and not isinstance(remote, KubernetesPodOperator)
    assert isinstance(remote.pod_operator(), KubernetesPodOperator)
    assert isinstance(local, LocalPodOperator) and isinstance(default, LocalPodOperator)
    assert remote.task_id == local.task_id == default.task_id == "eval-quality"
    assert pod_task(step, task_id="quality", execution="kubernetes", target=TARGET).task_id == "quality"


def test_unknown_execution_mode_is_refused(monkeypatch):
    monkeypatch.setenv(c.EXECUTION_ENV, "docker")
    with pytest.raises(TollgateError, match="TOLLGATE_EXECUTION='docker'"):
        pod_task(eval_step())


def test_production_settings_of_the_pod_operator():
    task = pod_task(eval_step(), execution="kubernetes", target=TARGET, retries=2)
    assert task.retries == 2
    op = task.pod_operator()
    assert op.startup_timeout_seconds >= 900
    assert op.schedule_timeout_seconds >= 900
    assert op.get_logs is True
    assert op.on_finish_action.value == "delete_succeeded_pod"
    assert op.do_xcom_push is False
    assert op.reattach_on_restart is True
    assert op.namespace == "tollgate-test"


def test_xcom_sidecar_is_refused():
    with pytest.raises(TollgateError, match="not through an XCom sidecar"):
        pod_task(eval_step(), execution="kubernetes", target=TARGET, do_xcom_push=True)


def test_target_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(c.K8S_NAMESPACE_ENV, "llmops")
    monkeypatch.setenv(c.K8S_CONN_ID_ENV, "k8s_prod")
    monkeypatch.setenv(c.K8S_IN_CLUSTER_ENV, "true")
    op = pod_task(eval_step(), execution="kubernetes").pod_operator()
    assert (op.namespace, op.kubernetes_conn_id, op.in_cluster) == ("llmops", "k8s_prod", True)
    monkeypatch.setenv(c.K8S_IN_CLUSTER_ENV, "maybe")
    with pytest.raises(TollgateError, match="TOLLGATE_K8S_IN_CLUSTER='maybe' must be one of"):
        KubernetesTarget.from_env()


def test_gpu_eval_pod_requests_the_gpu_and_lands_on_gpu_nodes():
    pod = render(eval_step())
    res = container(pod).resources
    assert res.requests[c.GPU_RESOURCE] == "1" and res.limits[c.GPU_RESOURCE] == "1"
    assert res.requests["cpu"] == "2" and res.requests["memory"] == res.limits["memory"] == "8Gi"
    assert pod.spec.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [(t.key, t.operator, t.effect) for t in pod.spec.tolerations] == [(c.GPU_RESOURCE, "Exists", "NoSchedule")]
    assert pod.spec.restart_policy == "Never"


def test_cpu_pod_asks_for_no_gpu():
    pod = render(eval_step(resources=Resources(cpu="1", memory="2Gi"), tolerations=(), node_selector={}))
    res = container(pod).resources
    assert c.GPU_RESOURCE not in res.requests and c.GPU_RESOURCE not in res.limits
    assert not pod.spec.tolerations and not pod.spec.node_selector


def test_eval_pod_mounts_weights_read_only_and_results_writable():
    pod = render(eval_step())
    m = mounts(pod)
    assert m["/models"].read_only is True and m["/models"].name == c.VOLUME_NAME
    assert m["/results"].read_only is False and m["/results"].sub_path == c.RESULTS_SUBPATH
    assert m["/tmp"].read_only in (None, False)
    volumes = {v.name: v for v in pod.spec.volumes}
    assert volumes[c.VOLUME_NAME].persistent_volume_claim.claim_name == c.MODEL_PVC
    assert volumes[c.TMP_VOLUME_NAME].empty_dir is not None
    env = {e.name: e.value for e in container(pod).env if e.value is not None}
    assert env[c.RESULTS_ENV] == "/results/quality.json"


def test_eval_pod_without_results_on_the_volume_gets_a_read_only_claim():
    pod = render(eval_step(results=ResultsLocation.s3("s3://tollgate/results/q.json")))
    assert "/results" not in mounts(pod)
    claim = next(v for v in pod.spec.volumes if v.name == c.VOLUME_NAME).persistent_volume_claim
    assert claim.read_only is True
    assert mounts(pod)["/models"].read_only is True


def test_staging_pod_mounts_the_claim_read_write():
    pod = render(stage_step())
    assert mounts(pod)["/models"].read_only is False
    claim = next(v for v in pod.spec.volumes if v.name == c.VOLUME_NAME).persistent_volume_claim
    assert claim.read_only is False


def test_secrets_are_secret_key_refs_and_never_values():
    for step in (eval_step(), stage_step()):
        pod = render(step)
        env = container(pod).env
        refs = {e.name: e.value_from.secret_key_ref for e in env if e.value_from is not None}
        for secret in step.secret_env:
            assert refs[secret.env].name == secret.secret and refs[secret.env].key == secret.key
            plain = [e for e in env if e.name == secret.env and e.value is not None]
            assert plain == [], f"{secret.env} must not be plain env"
        rendered = json.dumps(ApiClient().sanitize_for_serialization(pod))
        assert SECRET_VALUE not in rendered
        assert not container(pod).env_from


def test_secret_in_the_worker_env_does_not_leak_into_the_pod(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_VALUE)
    pod = render(eval_step())
    assert SECRET_VALUE not in json.dumps(ApiClient().sanitize_for_serialization(pod))


def test_security_context_non_root_read_only_no_capabilities():
    for step in (eval_step(), stage_step()):
        pod = render(step)
        psc, csc = pod.spec.security_context, container(pod).security_context
        assert psc.run_as_non_root is True and psc.run_as_user and psc.run_as_user > 0
        assert psc.seccomp_profile.type == "RuntimeDefault"
        assert csc.run_as_non_root is True
        assert csc.read_only_root_filesystem is True
        assert csc.allow_privilege_escalation is False
        assert csc.privileged is False
        assert csc.capabilities.drop == ["ALL"] and not csc.capabilities.add
        assert pod.spec.host_network is False
        assert pod.spec.automount_service_account_token is False


def test_service_account_gets_its_token():
    pod = render(eval_step(service_account="tollgate-canary"))
    assert pod.spec.service_account_name == "tollgate-canary"
    assert pod.spec.automount_service_account_token is True


def test_labels_name_the_step():
    pod = render(eval_step())
    assert pod.metadata.labels[c.LABEL_STEP] == "eval-quality"
    assert pod.metadata.labels[c.LABEL_PART_OF] == "tollgate"
    assert pod.metadata.name.startswith("eval-quality")
    assert pod.metadata.namespace == "tollgate-test"


def test_command_and_args_are_the_steps():
    step = eval_step()
    pod = render(step)
    assert container(pod).command == list(step.command)
    assert container(pod).args == list(step.args)
    assert container(pod).image == step.image


def _pod_with_exit(code: int | None) -> k8s.V1Pod:
    statuses = None
    if code is not None:
        statuses = [k8s.V1ContainerStatus(
            name="base", image="i", image_id="", ready=False, restart_count=0,
            state=k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=code)),
        )]
    return k8s.V1Pod(status=k8s.V1PodStatus(phase="Failed", container_statuses=statuses))


@pytest.mark.parametrize(("code", "outcome"), [(0, "passed"), (1, "check_failed"), (2, "bad_input"),
                                               (137, "infrastructure"), (None, "infrastructure")])
def test_exit_codes_mean_the_same_in_both_backends(code, outcome):
    assert container_exit_code(_pod_with_exit(code), "base") == code
    assert outcome_for_exit(code).value == outcome
    if code == 0:
        raise_for_exit("s", code)
    elif code in (1, 2):
        with pytest.raises(TollgateError) as info:
            raise_for_exit("s", code, "/results/q.json")
        assert info.value.exit_code == code and info.value.outcome.value == outcome
    else:
        with pytest.raises(AirflowException, match="infrastructure") as info:
            raise_for_exit("s", code)
        assert not isinstance(info.value, TollgateError)  # retries apply


# -- the model server manifests ---------------------------------------------------------------
def test_vllm_manifests_render_from_infra_templates():
    server = ModelServer(model_name="orders", model_version="2", node_selector={"pool": "gpu"})
    deployment, service = build_manifests(server, "orders", "2", None, "tollgate-test")
    assert deployment["kind"] == "Deployment" and service["kind"] == "Service"
    name = deployment["metadata"]["name"]
    assert name == service["metadata"]["name"] == "vllm-orders-2"
    pod = deployment["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    assert ctr["args"][ctr["args"].index("--model") + 1] == "/models/orders/2"
    assert ctr["args"][ctr["args"].index("--served-model-name") + 1] == "orders:2"
    assert ctr["resources"]["requests"][c.GPU_RESOURCE] == "1"
    assert {m["mountPath"]: m.get("readOnly", False) for m in ctr["volumeMounts"]}["/models"] is True
    claim = next(v for v in pod["volumes"] if v["name"] == "models")["persistentVolumeClaim"]
    assert claim == {"claimName": c.MODEL_PVC, "readOnly": True}
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/health"
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [{"key": c.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert all(deployment["spec"]["template"]["metadata"]["labels"][k] == v for k, v in selector.items())
    assert service["spec"]["ports"][0]["port"] == c.VLLM_PORT


def test_server_names_are_dns_labels_scoped_by_run():
    from tollgate.serving.base import resource_name, run_scope

    a, b = run_scope("nightly_eval", "scheduled__1"), run_scope("model_promotion", "manual__1")
    assert a != b and a == run_scope("nightly_eval", "scheduled__1") and len(a) == 8
    assert resource_name("orders", "2") == "vllm-orders-2"
    assert resource_name("orders", "2", a) == f"vllm-orders-2-{a}" != resource_name("orders", "2", b)
    long = resource_name("Very_Long.Model-Name" * 5, "2024.11.25-rc1" * 3, a)
    assert len(long) <= 63 and long.endswith(a)
    assert all(ch.islower() or ch.isdigit() or ch == "-" for ch in long) and not long.startswith("-")


def test_cpu_model_server_drops_the_gpu_request():
    server = ModelServer(model_name="orders", model_version="2", resources=Resources(cpu="4", memory="8Gi"),
                         tolerations=())
    deployment, _ = build_manifests(server, "orders", "2", None, "ns")
    res = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert c.GPU_RESOURCE not in res["requests"] and c.GPU_RESOURCE not in res["limits"]
    assert "tolerations" not in deployment["spec"]["template"]["spec"]


@pytest.mark.parametrize(("name", "version"), [("orders model", "1"), ("orders", "1;rm -rf"), ("../x", "1")])
def test_model_server_refuses_unsafe_names(name, version):
    with pytest.raises(TollgateError, match="invalid model server"):
        ModelServer(model_name=name, model_version=version)


def test_serve_and_stop_factories_pair_as_setup_and_teardown():
    from airflow.sdk import DAG

    server = ModelServer(model_name="{{ params.model_name }}", model_version="{{ params.model_version }}")
    for mode in ("local", "kubernetes"):
        with DAG(dag_id=f"pair_{mode}", schedule=None):
            serve = serve_model(server, execution=mode, target=TARGET)
            stop = stop_model(server, serve_task=serve, execution=mode, target=TARGET)
        assert (serve.task_id, stop.task_id) == ("serve_model", "stop_model")
        assert serve.is_setup and stop.is_teardown
        assert serve.task_id in stop.upstream_task_ids
