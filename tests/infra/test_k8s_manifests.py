"""infra/k8s (kustomize base + overlays gpu, cpu) and infra/docker, validated offline.

- Each overlay is rendered with scripts/kustomize_subset.py (no kustomize binary here);
  every object passes ``kubernetes-validate --strict`` against Kubernetes 1.37, except the
  Prometheus Operator CRDs (ServiceMonitor, PodMonitor, PrometheusRule), which it has no
  schema for: those are checked structurally below.
- checkov (its own venv, the faults helper's) finds nothing unwaived in the rendered
  overlays and the Dockerfiles; waivers and their reasons: infra/checkov-waivers.yaml.
- yamllint is clean on every YAML file under infra/k8s.
- The PrometheusRule is generated from infra/monitoring/rules (cannot drift).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "infra" / "k8s"
CHECKOV = REPO_ROOT / ".tollgate" / "tools-checkov" / "bin" / "checkov"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
OVERLAYS = ("gpu", "cpu")
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
YAMLLINT = "{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: disable}}"
sys.path.insert(0, str(REPO_ROOT / "scripts"))
import kustomize_subset  # noqa: E402


def rendered(overlay: str) -> list[dict]:
    return kustomize_subset.render(K8S / "overlays" / overlay)


def by_kind(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_passes_kubernetes_validate_strict(overlay: str, tmp_path: Path):
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(yaml.safe_dump_all(rendered(overlay), sort_keys=False))
    proc = subprocess.run([str(VALIDATE), "--strict", "-k", "1.37.0", str(out)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = (proc.stdout + proc.stderr).splitlines()
    passed = [ln for ln in lines if " passed for resource " in ln]
    skipped = {ln.split("kind ")[1].split(" ")[0] for ln in lines if "Couldn't find schema" in ln}
    assert skipped == CRD_KINDS, lines  # only the CRDs lack a schema
    assert len(passed) == len(rendered(overlay)) - len(CRD_KINDS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_crd_objects_have_the_fields_the_operator_needs(overlay: str):
    objs = by_kind(rendered(overlay))
    sm = objs[("ServiceMonitor", "tollgate-gateway")]
    gateway_svc = objs[("Service", "tollgate-gateway")]
    assert sm["spec"]["selector"]["matchLabels"].items() <= gateway_svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in gateway_svc["spec"]["ports"]}
    pm = objs[("PodMonitor", "vllm")]
    vllm_pod = objs[("Deployment", "vllm-stable")]["spec"]["template"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= vllm_pod["metadata"]["labels"].items()
    rule = objs[("PrometheusRule", "tollgate")]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["spec"]["groups"]
    assert all(r.get("expr") for g in rule["spec"]["groups"] for r in g["rules"])


def test_prometheus_rule_is_generated_from_the_monitoring_rules():
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "gen_k8s_monitoring.py"), "--check"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    rule = yaml.safe_load((K8S / "base" / "prometheusrule.yaml").read_text())
    groups = []
    for path in sorted((REPO_ROOT / "infra" / "monitoring" / "rules").glob("*.yaml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    assert rule["spec"]["groups"] == groups


def test_overlays_put_the_gpu_only_on_the_gpu_model_server():
    gpu, cpu = by_kind(rendered("gpu")), by_kind(rendered("cpu"))
    for objs, image, wants_gpu in ((gpu, "vllm/vllm-openai:v0.11.0", True),
                                   (cpu, "ghcr.io/tollgate-llmops/tollgate-vllm-cpu:0.32.0", False)):
        pod = objs[("Deployment", "vllm-stable")]["spec"]["template"]["spec"]
        ctr = pod["containers"][0]
        assert ctr["image"] == image
        assert ("nvidia.com/gpu" in ctr["resources"]["requests"]) is wants_gpu
        assert bool(pod.get("tolerations")) is wants_gpu
        # Slow loads: the startup probe allows >= 15 min before liveness can restart the pod.
        probe = ctr["startupProbe"]
        assert probe["periodSeconds"] * probe["failureThreshold"] >= 900
        assert {"readinessProbe", "livenessProbe"} <= set(ctr)
        gw = objs[("Deployment", "tollgate-gateway")]["spec"]["template"]["spec"]["containers"][0]
        assert "nvidia.com/gpu" not in gw["resources"]["requests"]
    hpa_metrics = {m["type"] for m in gpu[("HorizontalPodAutoscaler", "tollgate-gateway")]["spec"]["metrics"]}
    assert hpa_metrics == {"Pods", "Object"}  # queue depth + GPU utilisation
    assert {m["type"] for m in cpu[("HorizontalPodAutoscaler", "tollgate-gateway")]["spec"]["metrics"]} == {"Pods"}


def test_only_the_gateway_reaches_the_model_servers():
    objs = by_kind(rendered("gpu"))
    policy = objs[("NetworkPolicy", "vllm-ingress")]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "vllm"}
    [rule] = policy["ingress"]
    sources = [s.get("podSelector", {}).get("matchLabels") or s.get("namespaceSelector", {}).get("matchLabels")
               for s in rule["from"]]
    assert {"app.kubernetes.io/name": "tollgate-gateway"} in sources
    assert {"app.kubernetes.io/component": "step"} in sources  # evaluation pods hit the per-run servers
    assert all(s.get("namespaceSelector") is None or "podSelector" not in s for s in rule["from"])


def test_roles_grant_only_the_verbs_each_component_uses():
    objs = by_kind(rendered("gpu"))
    worker = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"])
              for r in objs[("Role", "tollgate-airflow-worker")]["rules"]}
    assert worker == {
        (("",), ("pods",)): {"create", "get", "list", "watch", "delete", "patch"},
        (("",), ("pods/log",)): {"get"},
        (("",), ("events",)): {"list"},
        (("",), ("services",)): {"create", "get", "delete"},
        (("apps",), ("deployments",)): {"create", "get", "delete"},
    }
    canary = objs[("Role", "tollgate-canary")]["rules"]
    assert all("delete" not in r["verbs"] and "create" not in r["verbs"] for r in canary)
    assert all(r["verbs"] != ["*"] and r["resources"] != ["*"] for role in ("tollgate-airflow-worker", "tollgate-canary")
               for r in objs[("Role", role)]["rules"])
    assert ("Role", "tollgate-step") not in objs  # steps never talk to the API
    step_sa = objs[("ServiceAccount", "tollgate-step")]
    assert step_sa["automountServiceAccountToken"] is False
    for binding in ("tollgate-airflow-worker", "tollgate-canary"):
        [subject] = objs[("RoleBinding", binding)]["subjects"]
        assert subject == {"kind": "ServiceAccount", "name": binding, "namespace": "tollgate"}


def test_checkov_finds_nothing_unwaived_in_the_overlays_and_dockerfiles(tmp_path: Path):
    assert CHECKOV.is_file(), f"{CHECKOV} missing: run bash scripts/setup.sh --with-browser"
    for overlay in OVERLAYS:
        (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(rendered(overlay), sort_keys=False))
    waivers = yaml.safe_load((REPO_ROOT / "infra" / "checkov-waivers.yaml").read_text())["waivers"]
    failed, scanned = [], 0
    for target, framework in ((tmp_path, "kubernetes"), (REPO_ROOT / "infra" / "docker", "dockerfile")):
        proc = subprocess.run([str(CHECKOV), "-d", str(target), "--skip-download", "--compact", "--quiet", "-o", "json",
                               "--framework", framework], capture_output=True, text=True, timeout=300, check=False,
                              env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"})
        doc = json.loads(proc.stdout)
        for report in doc if isinstance(doc, list) else [doc]:
            scanned += (report.get("summary") or {}).get("resource_count", 0)
            failed += [(c["check_id"], c["resource"]) for c in (report.get("results") or {}).get("failed_checks", [])]
    assert scanned >= 20, "checkov parsed nothing"
    assert [f for f in failed if f[0] not in waivers] == []


def test_yamllint_is_clean_on_the_manifests():
    files = [str(p) for p in sorted(K8S.rglob("*.yaml")) if "${" not in p.read_text()]
    assert len(files) >= 10
    proc = subprocess.run([sys.executable, "-m", "yamllint", "-f", "parsable", "-d", YAMLLINT, *files],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout


def test_dockerfiles_are_multi_stage_pinned_and_non_root():
    for path in sorted((REPO_ROOT / "infra" / "docker").glob("*.Dockerfile")):
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        froms = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
        assert len(froms) >= 2, f"{path.name}: multi-stage"
        external = [f for f in froms if ":" in f or "@" in f]
        assert external and all(not f.endswith(":latest") for f in external), path.name
        users = [ln for ln in lines if ln.startswith("USER ")]
        assert users and users[-1].split()[1].split(":")[0] not in ("root", "0"), f"{path.name}: non-root"
    assert (REPO_ROOT / ".dockerignore").is_file()


def test_the_default_step_image_is_what_the_evals_dockerfile_builds():
    from tollgate import constants as c

    text = (REPO_ROOT / "infra" / "docker" / "evals.Dockerfile").read_text()
    assert f"-t {c.DEFAULT_IMAGE} " in text
