"""One description of a heavy step, whichever backend runs it.

A ``PodStep`` says what a pod runs (image, command, args, env), what it may read
(env from Kubernetes Secrets, the model volume), what it needs (CPU, memory,
GPUs, node selector, tolerations) and where its results file lands. It checks
itself on construction and raises ``TollgateError`` naming the field, so a bad
step fails at DAG parse time, not at 3 a.m. on a GPU node.

The security context is not configurable on purpose: every step runs non-root,
with a read-only root filesystem, no capabilities and no privilege escalation;
``/tmp`` is a writable emptyDir.

    step = PodStep(
        name="eval-quality",
        command=("python", "-m", "evals.run"),
        args=("--model", "orders:2", "--suite", "quality", "--output", "/results/quality.json"),
        secret_env=(SecretEnv("OPENAI_API_KEY", secret="judge-llm", key="api-key"),),
        resources=Resources(cpu="2", memory="4Gi"),
        volume=ModelVolume.for_reading(),
        results=ResultsLocation.on_volume("quality.json"),
    )
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tollgate import constants as c
from tollgate import settings
from tollgate.exceptions import TollgateError

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_CPU = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
# Plain env is rendered into the pod spec and shown in the Airflow UI; credentials
# must come from a Secret (secretKeyRef), so names that look like one are refused.
_CREDENTIAL_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|API_KEY|PRIVATE_KEY|CREDENTIAL)", re.I)
_RESERVED_ENV = frozenset({c.RESULTS_ENV, c.EXECUTION_ENV})
_TOLERATION_OPERATORS = frozenset({"Exists", "Equal"})
_TOLERATION_EFFECTS = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})


def _fail(what: str, problem: str) -> TollgateError:
    return TollgateError(f"invalid pod step: {what} {problem}")


def _check_dns_label(what: str, value: str, max_len: int = 63) -> None:
    if not isinstance(value, str) or not _DNS_LABEL.match(value) or len(value) > max_len:
        raise _fail(what, f"{value!r} must be lowercase letters, digits and '-', at most {max_len} characters")


def _check_abs_path(what: str, value: str) -> None:
    if not isinstance(value, str) or not value.startswith("/") or "/../" in f"{value}/" or value == "/":
        raise _fail(what, f"{value!r} must be an absolute path below /")


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable whose value comes from a Kubernetes Secret key.

    The local backend reads the value from the Airflow worker's environment variable
    of the same name (``env``); it is passed to the subprocess and never logged.
    """

    env: str
    secret: str
    key: str
    optional: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.env, str) or not _ENV_NAME.match(self.env):
            raise _fail("secret_env name", f"{self.env!r} is not an environment variable name")
        if not isinstance(self.secret, str) or not _DNS_SUBDOMAIN.match(self.secret) or len(self.secret) > 253:
            raise _fail(f"secret_env {self.env} secret", f"{self.secret!r} is not a Kubernetes Secret name")
        if not isinstance(self.key, str) or not _SECRET_KEY.match(self.key):
            raise _fail(f"secret_env {self.env} key", f"{self.key!r} is not a Secret key")


@dataclass(frozen=True)
class Resources:
    """Requests (and limits) of the step's container.

    Memory and GPUs get request == limit: a GPU cannot be overcommitted and a memory
    overcommit ends in an OOM kill that looks like a failed gate. CPU has no limit
    unless given (CPU limits throttle tokenizers for no gain).
    """

    cpu: str = "1"
    memory: str = "2Gi"
    gpu: int = 0
    cpu_limit: str | None = None
    memory_limit: str | None = None

    def __post_init__(self) -> None:
        for what, value, pattern in (
            ("resources.cpu", self.cpu, _CPU),
            ("resources.memory", self.memory, _MEMORY),
            ("resources.cpu_limit", self.cpu_limit, _CPU),
            ("resources.memory_limit", self.memory_limit, _MEMORY),
        ):
            if value is None and what.endswith("_limit"):
                continue
            if not isinstance(value, str) or not pattern.match(value):
                raise _fail(what, f"{value!r} is not a Kubernetes quantity")
        if isinstance(self.gpu, bool) or not isinstance(self.gpu, int) or self.gpu < 0:
            raise _fail("resources.gpu", f"{self.gpu!r} must be a whole number >= 0")

    def requests(self) -> dict[str, str]:
        out = {"cpu": self.cpu, "memory": self.memory}
        if self.gpu:
            out[c.GPU_RESOURCE] = str(self.gpu)
        return out

    def limits(self) -> dict[str, str]:
        out = {"memory": self.memory_limit or self.memory}
        if self.cpu_limit:
            out["cpu"] = self.cpu_limit
        if self.gpu:
            out[c.GPU_RESOURCE] = str(self.gpu)
        return out


@dataclass(frozen=True)
class Toleration:
    """A Kubernetes toleration, e.g. for tainted GPU node pools."""

    key: str
    operator: str = "Exists"
    value: str | None = None
    effect: str | None = "NoSchedule"

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _LABEL_KEY.match(self.key):
            raise _fail("toleration key", f"{self.key!r} is not a taint key")
        if self.operator not in _TOLERATION_OPERATORS:
            raise _fail(f"toleration {self.key} operator", f"{self.operator!r} must be one of {sorted(_TOLERATION_OPERATORS)}")
        if self.operator == "Exists" and self.value is not None:
            raise _fail(f"toleration {self.key}", "with operator Exists takes no value")
        if self.operator == "Equal" and not self.value:
            raise _fail(f"toleration {self.key}", "with operator Equal needs a value")
        if self.effect is not None and self.effect not in _TOLERATION_EFFECTS:
            raise _fail(f"toleration {self.key} effect", f"{self.effect!r} must be one of {sorted(_TOLERATION_EFFECTS)}")

    @classmethod
    def gpu(cls) -> Toleration:
        """The taint GPU node pools usually carry (``nvidia.com/gpu:NoSchedule``)."""
        return cls(key=c.GPU_RESOURCE, operator="Exists", effect="NoSchedule")


@dataclass(frozen=True)
class ModelVolume:
    """The model PVC at ``mount_path``: writable only for the step that stages weights."""

    claim: str = c.MODEL_PVC
    mount_path: str = c.MODEL_MOUNT_PATH
    read_only: bool = True

    def __post_init__(self) -> None:
        _check_dns_label("volume claim", self.claim, max_len=253)
        _check_abs_path("volume mount_path", self.mount_path)
        if self.mount_path in (c.TMP_MOUNT_PATH, c.RESULTS_MOUNT_PATH):
            raise _fail("volume mount_path", f"{self.mount_path!r} is reserved")

    @classmethod
    def for_staging(cls, claim: str = c.MODEL_PVC) -> ModelVolume:
        return cls(claim=claim, read_only=False)

    @classmethod
    def for_reading(cls, claim: str = c.MODEL_PVC) -> ModelVolume:
        return cls(claim=claim, read_only=True)


@dataclass(frozen=True)
class ResultsLocation:
    """Where a step writes its results JSON: the model claim's results/ folder, or S3.

    Results travel as files, not through XCom sidecars (apache/airflow#15761).
    ``pod_path`` is what the command sees (it is also exported as TOLLGATE_RESULTS).
    """

    uri: str

    def __post_init__(self) -> None:
        if not isinstance(self.uri, str) or not self.uri:
            raise _fail("results", "must be a non-empty location")
        if self.uri.startswith("s3://"):
            if len(self.uri) <= len("s3://") or "/" not in self.uri[len("s3://"):]:
                raise _fail("results", f"{self.uri!r} must be s3://bucket/key")
            return
        prefix = c.RESULTS_MOUNT_PATH + "/"
        if not self.uri.startswith(prefix) or len(self.uri) == len(prefix) or "/../" in f"{self.uri}/":
            raise _fail("results", f"{self.uri!r} must be s3://bucket/key or a file under {c.RESULTS_MOUNT_PATH}/")

    @classmethod
    def on_volume(cls, relative_path: str) -> ResultsLocation:
        return cls(f"{c.RESULTS_MOUNT_PATH}/{relative_path.lstrip('/')}")

    @classmethod
    def s3(cls, uri: str) -> ResultsLocation:
        return cls(uri)

    @property
    def on_shared_volume(self) -> bool:
        return not self.uri.startswith("s3://")

    @property
    def pod_path(self) -> str:
        return self.uri


def _frozen_env(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class PodStep:
    """A heavy step (stage, eval, benchmark, canary check, fine-tune) described once.

    Strings in ``args`` and ``env`` values may hold Airflow templates
    (``{{ params.model_name }}``); both backends render them.
    """

    name: str
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    image: str = field(default_factory=lambda: settings.current().image)
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: tuple[SecretEnv, ...] = ()
    resources: Resources = field(default_factory=Resources)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    volume: ModelVolume | None = None
    service_account: str | None = None
    results: ResultsLocation | None = None
    # The run folder (relative to /results; may be a template) this step reads and writes.
    # Kubernetes mode moves it through S3 (evals.handoff around the command); locally it is a folder.
    handoff: str | None = None

    def __post_init__(self) -> None:
        # Accept lists from DAG authors, store immutable values.
        for name in ("command", "args", "secret_env", "tolerations"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        _check_dns_label("name", self.name)
        self._check_command()
        self._check_env()
        self._check_placement()
        self._check_storage()

    def _check_command(self) -> None:
        if not isinstance(self.image, str) or not self.image or any(ch.isspace() for ch in self.image):
            raise _fail("image", f"{self.image!r} must be a non-empty image reference without spaces")
        if not isinstance(self.command, tuple) or not self.command:
            raise _fail("command", "must be a non-empty sequence of strings")
        for what, seq in (("command", self.command), ("args", self.args)):
            if not isinstance(seq, tuple) or not all(isinstance(a, str) for a in seq):
                raise _fail(what, "must be a sequence of strings")
        if not all(self.command):
            raise _fail("command", "must not contain empty strings")

    def _check_env(self) -> None:
        """Plain env is for non-secrets only; credentials come from Secrets, never both."""
        if not isinstance(self.env, Mapping):
            raise _fail("env", "must be a mapping of names to strings")
        for key, value in self.env.items():
            if not isinstance(key, str) or not _ENV_NAME.match(key):
                raise _fail("env name", f"{key!r} is not an environment variable name")
            if not isinstance(value, str):
                raise _fail(f"env {key}", "must be a string")
            if _CREDENTIAL_NAME.search(key):
                raise _fail(f"env {key}", "looks like a credential: take it from a Secret with secret_env")
            if key in _RESERVED_ENV:
                raise _fail(f"env {key}", "is set by Tollgate")
        object.__setattr__(self, "env", _frozen_env(self.env))
        if not all(isinstance(s, SecretEnv) for s in self.secret_env):
            raise _fail("secret_env", "must be a sequence of SecretEnv")
        secret_names = [s.env for s in self.secret_env]
        if len(set(secret_names)) != len(secret_names):
            raise _fail("secret_env", "names the same variable twice")
        clash = set(secret_names) & set(self.env)
        if clash:
            raise _fail("env", f"{sorted(clash)} is set both as plain env and from a Secret")

    def _check_placement(self) -> None:
        if not isinstance(self.resources, Resources):
            raise _fail("resources", "must be a Resources value")
        if not isinstance(self.node_selector, Mapping) or not all(
            isinstance(k, str) and _LABEL_KEY.match(k) and isinstance(v, str) for k, v in self.node_selector.items()
        ):
            raise _fail("node_selector", "must map label keys to string values")
        object.__setattr__(self, "node_selector", _frozen_env(self.node_selector))
        if not all(isinstance(t, Toleration) for t in self.tolerations):
            raise _fail("tolerations", "must be a sequence of Toleration")
        if self.service_account is not None:
            _check_dns_label("service_account", self.service_account, max_len=253)

    def _check_storage(self) -> None:
        if self.volume is not None and not isinstance(self.volume, ModelVolume):
            raise _fail("volume", "must be a ModelVolume")
        if self.results is not None:
            if not isinstance(self.results, ResultsLocation):
                raise _fail("results", "must be a ResultsLocation")
            if self.results.on_shared_volume and self.volume is None and self.handoff is None:
                raise _fail("results", f"{self.results.uri!r} is on the model volume but the step mounts no volume "
                            "and has no handoff folder")
        if self.handoff is not None and (not isinstance(self.handoff, str) or not self.handoff.strip("/")
                                         or "/../" in f"/{self.handoff}/"):
            raise _fail("handoff", f"{self.handoff!r} must be a folder below {c.RESULTS_MOUNT_PATH}")

    @property
    def uses_gpu(self) -> bool:
        return self.resources.gpu > 0

    @property
    def argv(self) -> list[str]:
        return [*self.command, *self.args]
