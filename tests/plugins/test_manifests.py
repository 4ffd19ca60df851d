"""The manifests in infra/k8s parse, fill every field, and say what the README says."""

from __future__ import annotations

import string

import yaml

from tests.plugins.conftest import REPO_ROOT

K8S = REPO_ROOT / "infra" / "k8s"
ROLLOUT_VALUES = {
    "NAME": "orders", "NAMESPACE": "tollgate", "MODEL_LABEL": "orders", "VERSION_LABEL": "3",
    "PORT": "8000", "IMAGE": "vllm/vllm-openai:v0.11.0", "MODEL_DIR": "/models/orders/3",
    "SERVED_MODEL_NAME": "orders:3", "MAX_MODEL_LEN": "2048", "CPU": "4", "MEMORY": "24Gi", "GPU": "1",
    "MODEL_PVC": "tollgate-models", "HOST": "orders.llm.example.com", "EVALS_IMAGE": "tollgate-evals:0.1.0",
    "PROMETHEUS_URL": "http://prometheus.monitoring:9090",
}


def test_model_pvc_is_read_write_many():
    pvc = yaml.safe_load((K8S / "base" / "model-pvc.yaml").read_text())
    assert pvc["kind"] == "PersistentVolumeClaim"
    assert pvc["metadata"]["name"] == "tollgate-models"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_argo_rollout_canary_rolls_back_on_the_projects_own_check():
    text = string.Template((K8S / "argo-rollout-canary.yaml").read_text()).substitute(ROLLOUT_VALUES)
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(text)}
    rollout = docs[("Rollout", "orders")]
    canary = rollout["spec"]["strategy"]["canary"]
    assert canary["canaryService"] == "orders-canary" and ("Service", "orders-canary") in docs
    assert canary["stableService"] == "orders-stable" and ("Service", "orders-stable") in docs
    weights = [s["setWeight"] for s in canary["steps"] if "setWeight" in s]
    assert weights == [5, 25, 50]  # thresholds/canary-policy.yaml; the last pause ends at 100 (promoteFull)
    assert all(s == {"pause": {}} for s in canary["steps"][1::2])  # model_promotion ends each pause
    check = docs[("AnalysisTemplate", "tollgate-canary-check")]["spec"]["metrics"][0]
    job_spec = check["provider"]["job"]["spec"]["template"]["spec"]
    assert job_spec["serviceAccountName"] == "tollgate-canary" and ("ServiceAccount", "tollgate-canary") in docs
    job = job_spec["containers"][0]
    assert job["command"] == ["python", "-m", "canary.validate"]
    args = job["args"]
    assert args[args.index("--deployment") + 1] == "orders-canary"
    assert args[args.index("--namespace") + 1] == "tollgate"
    assert args[args.index("--duration") + 1] == "900"
    assert args[args.index("--quality-threshold") + 1] == "0.85"
    assert args[args.index("--error-rate-threshold") + 1] == "0.02"
    assert check["failureLimit"] == 0
    slo = {m["name"]: m for m in docs[("AnalysisTemplate", "tollgate-llm-slo")]["spec"]["metrics"]}
    assert "0.02" in slo["error-ratio"]["successCondition"] and "1.2" in slo["p95-latency"]["successCondition"]
    assert all(m["successCondition"].startswith("len(result) > 0 && ") for m in slo.values())  # absent: Failed
    pod = rollout["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {m["mountPath"]: m.get("readOnly") for m in ctr["volumeMounts"]}["/models"] is True
    selector = rollout["spec"]["selector"]["matchLabels"]
    assert all(rollout["spec"]["template"]["metadata"]["labels"][k] == v for k, v in selector.items())


def test_readme_names_every_manifest():
    readme = (K8S / "README.md").read_text()
    for path in sorted(K8S.glob("*.yaml")):
        assert path.name in readme, f"{path.name} is not documented in infra/k8s/README.md"
