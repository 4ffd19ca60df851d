"""infra/helm/airflow-values.yaml, validated offline (the chart itself cannot be fetched here).

- Chart keys: every key the file sets is one of ``CHART_KEYS`` below, with the type the chart
  declares for it. That list is hand-written from the official chart's values.schema.json
  (apache/airflow, chart/values.schema.json at commit 002e5532d7d5, the chart for Airflow 3.0.x);
  it is not the chart, so a key the chart renamed since would still pass here.
- The Kubernetes-typed values (init containers, volumes, resources, env from secrets) are put
  into one Pod shaped like a worker/api-server pod and pass ``kubernetes-validate --strict``.
- ``config``: every section.option is one Airflow 3.3.2 (the locked version) knows, and the
  ``AIRFLOW_CONN_*`` values parse as Airflow connections.
- Tollgate: every TOLLGATE_* is a declared setting whose value parses, the ones a production
  deployment needs are set, and they agree with infra/k8s (namespace, ServiceAccounts, the
  gateway's admin port), the images infra/docker builds, and the Secrets infra/README.md creates.
- yamllint is clean.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra import project_facts as facts

REPO_ROOT = facts.REPO_ROOT
VALUES = REPO_ROOT / "infra" / "helm" / "airflow-values.yaml"
K8S = REPO_ROOT / "infra" / "k8s"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
YAMLLINT = "{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: disable}}"

OPTIONAL_STR = (str, type(None))
PULL_POLICIES = {"Always", "Never", "IfNotPresent"}
# The chart keys this file uses, with their schema types. "k8s:" values are Kubernetes objects
# (validated below as part of a Pod); "env", "secret" and "config" have their own checks.
CHART_KEYS: dict[str, Any] = {
    "executor": str,
    "airflowVersion": str,
    "images.airflow.repository": OPTIONAL_STR,
    "images.airflow.tag": OPTIONAL_STR,
    "images.airflow.pullPolicy": PULL_POLICIES,
    "images.useDefaultImageForMigration": bool,
    "postgresql.enabled": bool,
    "data.metadataSecretName": OPTIONAL_STR,
    "fernetKeySecretName": OPTIONAL_STR,
    "apiSecretKeySecretName": OPTIONAL_STR,
    "jwtSecretName": OPTIONAL_STR,
    "redis.enabled": bool,
    "statsd.enabled": bool,
    "dags.persistence.enabled": bool,
    "dags.gitSync.enabled": bool,
    "logs.persistence.enabled": bool,
    "triggerer.persistence.enabled": bool,
    "workers.serviceAccount.create": bool,
    "workers.serviceAccount.name": OPTIONAL_STR,
    "workers.resources": "k8s:ResourceRequirements",
    "apiServer.replicas": int,
    "apiServer.extraInitContainers": "k8s:[]Container",
    "apiServer.extraVolumes": "k8s:[]Volume",
    "apiServer.extraVolumeMounts": "k8s:[]VolumeMount",
    "webserver.defaultUser.enabled": bool,
    "cleanup.enabled": bool,
    "env": "env",
    "secret": "secret",
    "config": "config",
}
EXECUTORS = {"LocalExecutor", "CeleryExecutor", "KubernetesExecutor"}
# The keys the chart reads from the Secrets it is given by name.
CHART_SECRET_KEYS = {"data.metadataSecretName": "connection", "fernetKeySecretName": "fernet-key",
                     "apiSecretKeySecretName": "api-secret-key", "jwtSecretName": "jwt-secret"}
# What a production deployment must set (env or secret), beyond the image's own ENV.
PRODUCTION_SETTINGS = {"TOLLGATE_EXECUTION", "TOLLGATE_K8S_NAMESPACE", "TOLLGATE_RESULTS_URI", "TOLLGATE_IMAGE",
                       "TOLLGATE_VLLM_IMAGE", "TOLLGATE_DEPLOY_TARGET", "TOLLGATE_GATEWAY_ADMIN_URL",
                       "TOLLGATE_GATEWAY_ADMIN_TOKEN", "TOLLGATE_PROMETHEUS_URL", "TOLLGATE_APPROVERS",
                       "TOLLGATE_K8S_STEP_SERVICE_ACCOUNT", "TOLLGATE_S3_BUCKET"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|FERNET|WEBHOOK")


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def leaves(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value, stopping at the keys CHART_KEYS declares (their values are checked whole)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if path in CHART_KEYS or not isinstance(value, dict):
            out[path] = value
        else:
            out.update(leaves(value, path + "."))
    return out


def env_of(values: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in values["env"]}


def readme_secrets() -> dict[str, set[str]]:
    """Secret name -> keys, from the `kubectl create secret generic` lines of infra/README.md."""
    out: dict[str, set[str]] = {}
    text = (REPO_ROOT / "infra" / "README.md").read_text()
    for line in re.findall(r"create secret generic [^`]+", text):
        name = line.split()[3]
        out.setdefault(name, set()).update(re.findall(r"--from-(?:literal|file)=([A-Za-z0-9._-]+)=", line))
    return out


def k8s_docs(kind: str) -> list[dict[str, Any]]:
    docs = []
    for path in sorted((K8S / "base").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == kind]
    return docs


def test_yamllint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "yamllint", "-f", "parsable", "-d", YAMLLINT, str(VALUES)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout


def test_every_key_is_a_chart_key_of_the_declared_type(values):
    found = leaves(values)
    assert set(found) - set(CHART_KEYS) == set(), "a key the chart does not have (or add it to CHART_KEYS)"
    for path, value in found.items():
        kind = CHART_KEYS[path]
        if isinstance(kind, set):
            assert value in kind, (path, value)
        elif isinstance(kind, (type, tuple)):
            assert isinstance(value, kind) and not (kind is int and isinstance(value, bool)), (path, value)
        elif kind == "env":
            assert all(set(e) == {"name", "value"} and all(isinstance(v, str) for v in e.values()) for e in value)
        elif kind == "secret":
            assert all({"envName", "secretName"} <= set(e) <= {"envName", "secretName", "secretKey"} for e in value)
        elif kind.startswith("k8s:[]"):
            assert isinstance(value, list) and all(isinstance(v, dict) for v in value), path
        elif kind.startswith("k8s:") or kind == "config":
            assert isinstance(value, dict), path
    assert values["executor"] in EXECUTORS and values["executor"] == "KubernetesExecutor"


def test_the_kubernetes_typed_values_pass_kubernetes_validate(values, tmp_path: Path):
    env = [{"name": e["name"], "value": e["value"]} for e in values["env"]]
    env += [{"name": s["envName"], "valueFrom": {"secretKeyRef": {"name": s["secretName"], "key": s["secretKey"]}}}
            for s in values["secret"]]
    api = values["apiServer"]
    image = f"{values['images']['airflow']['repository']}:{values['images']['airflow']['tag']}"
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "airflow-values-check", "namespace": "tollgate"},
        "spec": {
            "serviceAccountName": values["workers"]["serviceAccount"]["name"],
            "initContainers": api["extraInitContainers"],
            "containers": [{"name": "base", "image": image, "env": env, "resources": values["workers"]["resources"],
                            "volumeMounts": api["extraVolumeMounts"]}],
            "volumes": api["extraVolumes"],
        },
    }
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod, sort_keys=False))
    proc = subprocess.run([str(VALIDATE), "--strict", "-k", "1.37.0", str(path)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0 and " passed for resource " in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    mounted = {v["name"] for c in api["extraInitContainers"] for v in c["volumeMounts"]}
    mounted |= {v["name"] for v in api["extraVolumeMounts"]}
    assert mounted == {v["name"] for v in api["extraVolumes"]}


def test_config_options_are_airflows_and_the_connections_parse(values):
    from airflow.models.connection import Connection

    from evals.launcher import AIRFLOW_USERS

    options = facts.airflow_options()
    for section, body in values["config"].items():
        for key, value in body.items():
            assert key in options.get(section, set()), f"config.{section}.{key}: Airflow has no such option"
            assert isinstance(value, str), f"config.{section}.{key}: give Airflow a string"
            secret_like = SECRET_NAME.search(key.upper()) and not key.endswith("_file")  # a path is no secret
            assert not secret_like and key not in ("sql_alchemy_conn", "fernet_key"), key
    env = env_of(values)
    conns = {name.removeprefix("AIRFLOW_CONN_").lower(): Connection.from_json(value, conn_id=name)
             for name, value in env.items() if name.startswith("AIRFLOW_CONN_")}
    k8s = conns[env["TOLLGATE_K8S_CONN_ID"]]
    assert k8s.conn_type == "kubernetes" and k8s.extra_dejson == {"in_cluster": True,
                                                                  "namespace": env["TOLLGATE_K8S_NAMESPACE"]}
    logging = values["config"]["logging"]
    assert logging["remote_logging"] == "True" and conns[logging["remote_log_conn_id"]].conn_type == "aws"
    assert logging["remote_base_log_folder"].startswith(f"s3://{env['TOLLGATE_S3_BUCKET']}/")
    assert not any(SECRET_NAME.search(json.dumps(c.extra_dejson).upper()) for c in conns.values())
    core = values["config"]["core"]
    assert dict(u.split(":") for u in core["simple_auth_manager_users"].split(",")) == AIRFLOW_USERS
    assert set(env["TOLLGATE_APPROVERS"].split(",")) <= set(AIRFLOW_USERS)
    users_mount = values["apiServer"]["extraVolumeMounts"][0]["mountPath"]
    assert Path(core["simple_auth_manager_passwords_file"]).parent == Path(users_mount)


def test_the_tollgate_settings_of_a_production_deployment(values):
    from tollgate import constants as c

    env = env_of(values)
    secret_env = {s["envName"] for s in values["secret"]}
    known = facts.declared()
    named = {n for n in [*env, *secret_env] if n.startswith("TOLLGATE_")}
    assert named - set(known) == set(), "undeclared TOLLGATE_*"
    facts.parse_settings(env)  # every value parses (BadInput names the variable)
    assert set(env) | secret_env >= PRODUCTION_SETTINGS
    assert not any(SECRET_NAME.search(n) for n in env), "a secret as a plain env value: use `secret:`"
    assert env["TOLLGATE_EXECUTION"] == c.ExecutionMode.KUBERNETES and env["TOLLGATE_DEPLOY_TARGET"] == "kubernetes"
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert env["TOLLGATE_K8S_NAMESPACE"] == kustomization["namespace"] == c.DEFAULT_NAMESPACE
    assert env["TOLLGATE_IMAGE"] == c.DEFAULT_IMAGE == facts.dockerfile_tag("infra/docker/evals.Dockerfile")
    assert env["TOLLGATE_VLLM_IMAGE"] == c.DEFAULT_VLLM_IMAGE
    assert env["TOLLGATE_RESULTS_URI"].startswith(f"s3://{env['TOLLGATE_S3_BUCKET']}/")
    dockerfile = (REPO_ROOT / "infra" / "docker" / "airflow.Dockerfile").read_text()
    for name in ("TOLLGATE_THRESHOLDS", "TOLLGATE_K8S_TEMPLATES"):
        assert re.search(rf"\b{name}={re.escape(env[name])}\b", dockerfile), name  # what the image holds
    # the gateway's admin API: its Service in infra/k8s, in the namespace
    [gateway_svc] = [s for s in k8s_docs("Service") if s["metadata"]["name"] == "tollgate-gateway"]
    admin_port = next(p["port"] for p in gateway_svc["spec"]["ports"] if p["name"] == "admin")
    assert env["TOLLGATE_GATEWAY_ADMIN_URL"] == f"http://tollgate-gateway.{env['TOLLGATE_K8S_NAMESPACE']}.svc:{admin_port}"


def test_images_and_versions_are_the_ones_infra_docker_builds(values):
    image = values["images"]["airflow"]
    built = facts.dockerfile_tag("infra/docker/airflow.Dockerfile")
    assert f"{image['repository']}:{image['tag']}" == built
    assert all(c["image"] == built for c in values["apiServer"]["extraInitContainers"])
    airflow = facts.locked_version("apache-airflow")
    assert values["airflowVersion"] == airflow
    assert all(f.startswith(f"apache/airflow:{airflow}-") for f in facts.dockerfile_froms("infra/docker/airflow.Dockerfile"))


def test_service_accounts_and_rbac_come_from_infra_k8s(values):
    env = env_of(values)
    accounts = {sa["metadata"]["name"] for sa in k8s_docs("ServiceAccount")}
    worker = values["workers"]["serviceAccount"]
    assert worker["create"] is False and worker["name"] in accounts
    [binding] = [b for b in k8s_docs("RoleBinding") if b["metadata"]["name"] == worker["name"]]
    assert binding["subjects"][0]["name"] == worker["name"]
    assert env["TOLLGATE_K8S_STEP_SERVICE_ACCOUNT"] in accounts


def test_every_secret_is_one_the_install_steps_create(values):
    from tollgate import pipeline

    created = readme_secrets()
    wanted: dict[str, set[str]] = {}
    for s in values["secret"]:
        wanted.setdefault(s["secretName"], set()).add(s["secretKey"])
    for path, key in CHART_SECRET_KEYS.items():
        node: Any = values
        for part in path.split("."):
            node = node[part]
        wanted.setdefault(node, set()).add(key)
    for volume in values["apiServer"]["extraVolumes"]:
        if "secret" in volume:
            command = " ".join(values["apiServer"]["extraInitContainers"][0]["command"])
            key = re.search(r"/users-secret/(\S+)", command).group(1)
            wanted.setdefault(volume["secret"]["secretName"], set()).add(key)
    for name, keys in wanted.items():
        assert name in created and keys <= created[name], f"infra/README.md must create Secret {name} with {keys}"
    # the S3 Secret is the one the step pods read too (tollgate.pipeline), with the same keys
    assert wanted[pipeline.S3_SECRET_NAME] == {"access-key-id", "secret-access-key"}


def test_git_sync_is_a_commented_alternative():
    text = VALUES.read_text()
    assert re.search(r"^\s+# repo: ", text, re.MULTILINE) and re.search(r"^\s+# subPath: dags$", text, re.MULTILINE)
    assert (REPO_ROOT / "dags").is_dir()
