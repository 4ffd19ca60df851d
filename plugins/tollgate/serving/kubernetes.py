"""Kubernetes backend of the model server: a vLLM Deployment + Service from infra/k8s.

Setup renders ``vllm-deployment.yaml`` and ``vllm-service.yaml`` (string.Template
fields), creates both, and waits for the Deployment's ready replicas with a
deadline long enough for a GPU node scale-up; it returns the in-cluster URL of
the Service. Teardown deletes both (404 is fine: already gone). Names are
derived from model, version and DAG run, so a retried setup finds its own
Deployment instead of starting a second GPU server, and two runs serving the
same version do not share (or delete) each other's.
"""

from __future__ import annotations

import string
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from tollgate import constants as c
from tollgate.exceptions import TollgateError
from tollgate.operators.base import KubernetesTarget
from tollgate.serving.base import (
    ModelServer,
    check_model_ref,
    relative_model_path,
    resource_name,
    run_scope,
    served_name,
    slug,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

DEPLOYMENT_TEMPLATE = "vllm-deployment.yaml"
SERVICE_TEMPLATE = "vllm-service.yaml"


def templates_dir() -> Path:
    from tollgate import settings

    return Path(settings.current().k8s_templates or c.REPO_ROOT / "infra" / "k8s")


def render_manifest(template: str, values: dict[str, str]) -> dict[str, Any]:
    """Fill a ${FIELD} manifest; every field must be known (no silent blanks)."""
    import yaml

    path = templates_dir() / template
    try:
        text = path.read_text()
    except OSError as exc:
        raise TollgateError(f"cannot read manifest template {path}: {exc.strerror}") from None
    try:
        rendered = string.Template(text).substitute(values)
    except (KeyError, ValueError) as exc:
        raise TollgateError(f"manifest template {path}: unknown or malformed field {exc}") from None
    return yaml.safe_load(rendered)


def manifest_values(
    server: ModelServer, name: str, version: str, path: str | None, namespace: str, scope: str | None = None
) -> dict[str, str]:
    res = server.resources
    return {
        "NAME": resource_name(name, version, scope),
        "NAMESPACE": namespace,
        "IMAGE": server.image,
        "MODEL_DIR": f"{c.MODEL_MOUNT_PATH}/{relative_model_path(name, version, path)}",
        "SERVED_MODEL_NAME": served_name(name, version),
        "MODEL_PVC": server.claim,
        "MODEL_LABEL": slug(name)[:63],
        "VERSION_LABEL": slug(version)[:63],
        "PORT": str(c.VLLM_PORT),
        "MAX_MODEL_LEN": str(server.max_model_len),
        "CPU": res.cpu,
        "MEMORY": res.memory,
        "GPU": str(res.gpu),
        "READY_TIMEOUT_S": str(int(server.ready_timeout_s)),
    }


def build_manifests(
    server: ModelServer, name: str, version: str, path: str | None, namespace: str, scope: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment and Service for one version, with the server's scheduling constraints."""
    values = manifest_values(server, name, version, path, namespace, scope)
    deployment = render_manifest(DEPLOYMENT_TEMPLATE, values)
    service = render_manifest(SERVICE_TEMPLATE, values)
    pod_spec = deployment["spec"]["template"]["spec"]
    if server.node_selector:
        pod_spec["nodeSelector"] = dict(server.node_selector)
    if server.tolerations:
        pod_spec["tolerations"] = [
            {k: v for k, v in {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect}.items()
             if v is not None}
            for t in server.tolerations
        ]
    if not server.resources.gpu:
        for section in ("requests", "limits"):
            pod_spec["containers"][0]["resources"][section].pop(c.GPU_RESOURCE, None)
    return deployment, service


def _hook(target: KubernetesTarget) -> Any:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    return KubernetesHook(
        conn_id=target.conn_id,
        in_cluster=target.in_cluster,
        config_file=target.config_file,
        cluster_context=target.cluster_context,
    )


def _status_code(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


def _scope(context: Any) -> str | None:
    ti = context.get("ti") if context else None
    return run_scope(getattr(ti, "dag_id", None), context.get("run_id") if context else None)


class KubernetesServeModelOperator(BaseOperator):
    """Create the vLLM Deployment + Service, wait until ready, return the Service URL."""

    template_fields: Sequence[str] = ("model_name", "model_version", "model_path")
    ui_color = "#fdf0d5"

    def __init__(
        self, *, server: ModelServer, target: KubernetesTarget | None = None, poll_interval_s: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.server = server
        self.target = target or KubernetesTarget.from_env()
        self.model_name = server.model_name
        self.model_version = server.model_version
        self.model_path = server.model_path
        self.poll_interval_s = poll_interval_s

    def manifests(self, scope: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        check_model_ref(self.model_name, self.model_version, self.model_path)
        return build_manifests(
            self.server, self.model_name, self.model_version, self.model_path, self.target.namespace, scope
        )

    def execute(self, context: Context) -> str:
        deployment, service = self.manifests(_scope(context))
        hook = _hook(self.target)
        apps, core = hook.apps_v1_client, hook.core_v1_client
        ns, name = self.target.namespace, deployment["metadata"]["name"]
        self._create(lambda: apps.create_namespaced_deployment(ns, deployment), "Deployment", name)
        self._create(lambda: core.create_namespaced_service(ns, service), "Service", name)
        self._wait_ready(apps, ns, name)
        endpoint = f"http://{name}.{ns}.svc.cluster.local:{c.VLLM_PORT}"
        self.log.info("serving %s at %s", served_name(self.model_name, self.model_version), endpoint)
        return endpoint

    def _create(self, create: Any, kind: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            create()
            self.log.info("created %s %s/%s", kind, self.target.namespace, name)
        except ApiException as exc:
            if _status_code(exc) != 409:
                raise
            self.log.info("%s %s/%s exists (a retried setup); reusing it", kind, self.target.namespace, name)

    def _wait_ready(self, apps: Any, namespace: str, name: str) -> None:
        deadline = time.monotonic() + self.server.ready_timeout_s
        while True:
            dep = apps.read_namespaced_deployment(name, namespace)
            want = (dep.spec.replicas if dep.spec and dep.spec.replicas is not None else 1)
            ready = (dep.status.ready_replicas if dep.status else None) or 0
            if ready >= want:
                return
            for cond in (dep.status.conditions if dep.status else None) or []:
                if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
                    raise AirflowException(f"Deployment {namespace}/{name} did not progress: {cond.message}")
            if time.monotonic() > deadline:
                raise AirflowException(
                    f"Deployment {namespace}/{name}: {ready}/{want} replicas ready after "
                    f"{self.server.ready_timeout_s:.0f} s (GPU capacity? image pull? see kubectl describe)"
                )
            time.sleep(self.poll_interval_s)  # polling interval, bounded by the deadline above


class KubernetesStopModelOperator(BaseOperator):
    """Delete the vLLM Deployment + Service of one version; missing objects are fine."""

    template_fields: Sequence[str] = ("model_name", "model_version")
    ui_color = "#fdf0d5"

    def __init__(self, *, server: ModelServer, target: KubernetesTarget | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server = server
        self.target = target or KubernetesTarget.from_env()
        self.model_name = server.model_name
        self.model_version = server.model_version

    def execute(self, context: Context) -> None:
        from kubernetes.client.exceptions import ApiException

        check_model_ref(self.model_name, self.model_version, None)
        hook = _hook(self.target)
        ns, name = self.target.namespace, resource_name(self.model_name, self.model_version, _scope(context))
        for kind, delete in (
            ("Service", lambda: hook.core_v1_client.delete_namespaced_service(name, ns)),
            ("Deployment", lambda: hook.apps_v1_client.delete_namespaced_deployment(name, ns)),
        ):
            try:
                delete()
                self.log.info("deleted %s %s/%s", kind, ns, name)
            except ApiException as exc:
                if _status_code(exc) != 404:
                    raise
                self.log.info("%s %s/%s already gone", kind, ns, name)
