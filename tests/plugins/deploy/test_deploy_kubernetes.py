"""The kubernetes deployments against the Kubernetes mock server (kmock): the exact patches, in order."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evals.canary import analysis
from evals.canary.policy import load_policy
from tests.plugins.kmock_cluster import KmockCluster
from tollgate.deploy import CANARY, PREVIOUS, STABLE, DeploymentError
from tollgate.deploy.kubernetes import ArgoRolloutDeployment, KubernetesDeployment

NS = "tollgate-test"
ROOT = Path(__file__).resolve().parents[3]
ARGO_RES = "argoproj.io/v1alpha1/rollouts"


class Cluster(KmockCluster):
    async def _start(self):
        await super()._start()
        self.emulator.resources[ARGO_RES] = {}


def container(version: str) -> dict:
    return {"name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
            "args": ["--model", f"/models/orders/{version}", "--served-model-name", f"orders:{version}",
                     "--port", "8000"]}


def deployment(slot: str, replicas: int, version: str | None) -> dict:
    ann = {f"tollgate.dev/{slot}-version": version} if version else {}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"vllm-orders-{slot}", "namespace": NS, "annotations": ann},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "x"}},
                     "template": {"metadata": {"labels": {"app": "x"}},
                                  "spec": {"containers": [container(version or "1")]}}}}


@pytest.fixture
def cluster(tmp_path):
    with Cluster(tmp_path) as cl:
        yield cl


def clients(cl):
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(cl.kubeconfig))
    return client.AppsV1Api(api), client.CustomObjectsApi(api)


def patches(cl, since: int = 0) -> list[tuple[str, dict]]:
    """(path, body) of every PATCH the cluster received after request number ``since``."""
    out = []
    for r in list(cl.emulator)[since:]:
        if str(r.method).upper().endswith("PATCH"):
            out.append((r.url.path.removeprefix(f"/apis/apps/v1/namespaces/{NS}/deployments/")
                        .removeprefix(f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts/"), r.data))
    return out


def mark(cl) -> int:
    return len(list(cl.emulator))


def template_patch(slot, version, replicas, serving="true"):
    return {"metadata": {"labels": {"tollgate.dev/model-version": version},
                         "annotations": {f"tollgate.dev/{slot}-version": version}},
            "spec": {"replicas": replicas, "template": {
                "metadata": {"labels": {"tollgate.dev/model-version": version, "tollgate.dev/slot": slot,
                                        "tollgate.dev/serving": serving}},
                "spec": {"containers": [{"name": "vllm", "args": [
                    "--model", f"/models/orders/{version}", "--served-model-name", f"orders:{version}",
                    "--port", "8000"]}]}}}}


def test_deployment_pair_canary_steps_and_full_rollout(cluster):
    apps, _ = clients(cluster)
    for slot, replicas, version in ((STABLE, 4, "1"), (CANARY, 0, None), (PREVIOUS, 0, None)):
        apps.create_namespaced_deployment(NS, deployment(slot, replicas, version))
    d = KubernetesDeployment("orders", NS, apps, replicas=4)
    start = mark(cluster)
    d.deploy(CANARY, "2")
    for w in (5, 25, 50, 100):
        d.set_weight(w)
    st = d.promote_canary()
    assert patches(cluster, start) == [
        ("vllm-orders-canary", template_patch(CANARY, "2", 0)),  # deployed at weight 0: no pods yet
        ("vllm-orders-canary", {"spec": {"replicas": 1}}), ("vllm-orders-stable", {"spec": {"replicas": 3}}),
        ("vllm-orders-canary", {"spec": {"replicas": 1}}), ("vllm-orders-stable", {"spec": {"replicas": 3}}),
        ("vllm-orders-canary", {"spec": {"replicas": 2}}), ("vllm-orders-stable", {"spec": {"replicas": 2}}),
        ("vllm-orders-canary", {"spec": {"replicas": 4}}), ("vllm-orders-stable", {"spec": {"replicas": 0}}),
        # full rollout: the old stable warm out of the Service, the candidate into stable, the canary scaled away
        ("vllm-orders-previous", template_patch(PREVIOUS, "1", 1, serving="false")),
        ("vllm-orders-stable", template_patch(STABLE, "2", 4)),
        ("vllm-orders-canary", {"spec": {"replicas": 0}}),
    ]
    assert st.stable.version == "2" and st.canary is None and st.previous.version == "1"
    start = mark(cluster)
    st = d.remove(PREVIOUS)
    assert patches(cluster, start) == [("vllm-orders-previous", {"spec": {"replicas": 0}})]
    assert st.previous is None


def test_deployment_pair_abort_scales_the_canary_down_first(cluster):
    apps, _ = clients(cluster)
    for slot, replicas, version in ((STABLE, 4, "1"), (CANARY, 0, None), (PREVIOUS, 0, None)):
        apps.create_namespaced_deployment(NS, deployment(slot, replicas, version))
    d = KubernetesDeployment("orders", NS, apps, replicas=4)
    d.deploy(CANARY, "2")
    assert d.set_weight(25).weight == 25
    start = mark(cluster)
    st = d.remove(CANARY)
    assert patches(cluster, start) == [("vllm-orders-canary", {"spec": {"replicas": 0}}),
                                       ("vllm-orders-stable", {"spec": {"replicas": 4}})]
    assert st.weight == 0 and st.canary is None and st.stable.version == "1"
    with pytest.raises(DeploymentError, match="never removed"):
        d.remove(STABLE)


def test_deployment_pair_without_its_deployments_says_what_to_create(cluster):
    apps, _ = clients(cluster)
    with pytest.raises(DeploymentError, match="vllm-orders-canary does not exist"):
        KubernetesDeployment("orders", NS, apps).deploy(CANARY, "2")


def rollout() -> dict:
    doc = next(d for d in yaml.safe_load_all(render_argo()) if d["kind"] == "Rollout")
    doc["metadata"]["annotations"] = {"tollgate.dev/stable-version": "1"}
    return doc


def render_argo() -> str:
    import string

    text = (ROOT / "infra" / "k8s" / "argo-rollout-canary.yaml").read_text()
    fields = {k: "1" for k in ("PORT", "MAX_MODEL_LEN", "CPU", "GPU", "MEMORY")}
    fields.update(NAME="vllm-orders", NAMESPACE=NS, MODEL_LABEL="orders", VERSION_LABEL="1", IMAGE="vllm",
                  MODEL_DIR="/models/orders/1", SERVED_MODEL_NAME="orders:1", MODEL_PVC="tollgate-models",
                  HOST="orders.example", PROMETHEUS_URL="http://prometheus:9090", EVALS_IMAGE="evals",
                  MODEL="orders", WARM_SECONDS="1800")
    return string.Template(text).substitute(fields)


def test_argo_rollout_steps_are_promote_abort_and_promote_full(cluster):
    _, custom = clients(cluster)
    custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "rollouts", rollout())
    d = ArgoRolloutDeployment("orders", NS, custom)
    start = mark(cluster)
    d.deploy(CANARY, "2")
    d.set_weight(25)
    d.set_weight(0)
    got = patches(cluster, start)
    assert [p for p, _ in got] == ["vllm-orders", "vllm-orders", "vllm-orders/status", "vllm-orders/status"]
    template = got[0][1]
    assert template["metadata"] == {"annotations": {"tollgate.dev/canary-version": "2"}}
    args = template["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--model") + 1] == "/models/orders/2"
    assert args[args.index("--served-model-name") + 1] == "orders:2"
    assert got[1:] == [("vllm-orders", {"spec": {"paused": False}}),
                       ("vllm-orders/status", {"status": {"pauseConditions": None}}),
                       ("vllm-orders/status", {"status": {"abort": True}})]
    with pytest.raises(DeploymentError, match="no step setWeight: 30"):
        d.set_weight(30)
    start = mark(cluster)
    d.promote_canary()
    assert patches(cluster, start) == [("vllm-orders/status", {"status": {"promoteFull": True}}),
                                       ("vllm-orders", {"metadata": {"annotations": {
                                           "tollgate.dev/stable-version": "2"}}})]


def test_argo_template_is_the_policy_and_the_analysis_fails_closed():
    docs = list(yaml.safe_load_all(render_argo()))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("ServiceAccount", "tollgate-canary") in kinds
    ro = next(d for d in docs if d["kind"] == "Rollout")
    policy = load_policy()
    weights = [s["setWeight"] for s in ro["spec"]["strategy"]["canary"]["steps"] if "setWeight" in s]
    assert weights == [s.weight for s in policy.steps if s.weight < 100]
    assert all("pause" in s and s["pause"] == {} for s in ro["spec"]["strategy"]["canary"]["steps"][1::2])
    slo = next(d for d in docs if d["kind"] == "AnalysisTemplate" and d["metadata"]["name"] == "tollgate-llm-slo")
    queries = analysis.queries(policy, "orders", "canary", policy.analysis.window_s, NS)
    by_name = {m["name"]: m for m in slo["spec"]["metrics"]}
    assert " ".join(by_name["error-ratio"]["provider"]["prometheus"]["query"].split()) == queries["error_ratio"]
    assert " ".join(by_name["p95-latency"]["provider"]["prometheus"]["query"].split()) == queries["latency_p95_s"]
    for m in by_name.values():
        assert m["successCondition"].startswith("len(result) > 0 && "), m["name"]  # absent metric: Failed
    check = next(d for d in docs if d["kind"] == "AnalysisTemplate" and d["metadata"]["name"] ==
                 "tollgate-canary-check")
    job = check["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]
    assert job["serviceAccountName"] == "tollgate-canary"
    args = job["containers"][0]["args"]
    assert job["containers"][0]["command"] == ["python", "-m", "canary.validate"]
    assert args[args.index("--namespace") + 1] == NS
    assert args[args.index("--prometheus-url") + 1] == "http://prometheus:9090"
