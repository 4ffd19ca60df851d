"""The model server for the version under test, described once for both backends.

The serving task is an Airflow *setup* and its stop task a *teardown*: the
teardown runs even when evaluations fail, so no server outlives its DAG run.

    server = ModelServer(model_name="{{ params.model_name }}", model_version="{{ params.model_version }}")
    serve = serve_model(server)                    # returns the endpoint (XCom return_value)
    stop = stop_model(server, serve_task=serve)    # wired as serve's teardown
    serve >> [eval_quality, eval_safety] >> stop
    eval_quality = pod_task(PodStep(..., env=endpoint_env()))
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from evals.contract import MODEL_NAME_PATTERN, MODEL_VERSION_PATTERN, is_model_name, is_model_version, model_ref
from tollgate import constants as c
from tollgate import settings
from tollgate.exceptions import TollgateError
from tollgate.podspec import Resources, Toleration

_REL_PATH = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def is_templated(value: str) -> bool:
    return "{{" in value or "{%" in value


def slug(value: str) -> str:
    """A DNS-label-safe form of a model name or version."""
    out = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    return out or "x"


@dataclass(frozen=True)
class ModelServer:
    """Which version to serve and with what. Name and version may be Airflow templates."""

    model_name: str
    model_version: str
    model_path: str | None = None  # relative to the model volume; default NAME/VERSION (where evals.stage puts it)
    claim: str = c.MODEL_PVC
    image: str = field(default_factory=lambda: settings.current().vllm_image)
    resources: Resources = field(default_factory=lambda: Resources(cpu="4", memory="24Gi", gpu=1))
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = (Toleration.gpu(),)
    max_model_len: int = 2048
    ready_timeout_s: float = c.SERVER_READY_TIMEOUT_S

    def __post_init__(self) -> None:
        check_model_ref(self.model_name, self.model_version, self.model_path)
        if not isinstance(self.max_model_len, int) or self.max_model_len < 16:
            raise TollgateError(f"invalid model server: max_model_len {self.max_model_len!r} must be an int >= 16")
        if not self.ready_timeout_s > 0:
            raise TollgateError("invalid model server: ready_timeout_s must be > 0")


def check_model_ref(name: str, version: str, path: str | None) -> None:
    """Validate rendered values; templated ones are checked again after rendering."""
    if not is_templated(name) and not is_model_name(name):
        raise TollgateError(f"invalid model server: model_name {name!r} must match {MODEL_NAME_PATTERN}")
    if not is_templated(version) and not is_model_version(version):
        raise TollgateError(f"invalid model server: model_version {version!r} must match {MODEL_VERSION_PATTERN}")
    if path is not None and not is_templated(path) and (not _REL_PATH.match(path) or ".." in path.split("/")):
        raise TollgateError(f"invalid model server: model_path {path!r} must be relative to the model volume")


def served_name(name: str, version: str) -> str:
    """The name vLLM serves the model under: NAME:VERSION (what evals --model takes)."""
    return model_ref(name, version)


def relative_model_path(name: str, version: str, path: str | None) -> str:
    return path or f"{name}/{version}"


def run_scope(dag_id: str | None, run_id: str | None) -> str | None:
    """A short, stable tag of one DAG run: its servers are its own.

    nightly_eval and model_promotion may serve the same champion at the same time;
    scoping names by run keeps one run's teardown from deleting the other's server,
    while a retried setup in the same run still finds its own Deployment.
    """
    if not dag_id or not run_id:
        return None
    return hashlib.sha256(f"{dag_id}/{run_id}".encode()).hexdigest()[:8]


def resource_name(name: str, version: str, scope: str | None = None) -> str:
    """Deployment/Service name: vllm-<name>-<version>[-<run scope>], a DNS label (<= 63 chars)."""
    tail = slug(version)[:20] + (f"-{scope}" if scope else "")
    return f"vllm-{slug(name)[: 63 - len('vllm-') - len(tail) - 1].strip('-')}-{tail}"


def endpoint_ref(serve_task_id: str = "serve_model") -> str:
    """An Airflow template that renders to the served endpoint (http://host:port, no /v1)."""
    return "{{ ti.xcom_pull(task_ids='" + serve_task_id + "') }}"


def endpoint_env(serve_task_id: str = "serve_model") -> dict[str, str]:
    """Env for a PodStep that talks to the served model (evals read either variable)."""
    ref = endpoint_ref(serve_task_id)
    return {c.ENDPOINT_ENV: ref, "OPENAI_BASE_URL": ref + "/v1"}
