"""The gateway's config file (YAML or JSON), read once and validated field by field.

Every mistake is :class:`~evals.errors.BadInput` naming the file and the dotted field
(``gateway.yaml: limits.max_tokens must be an integer >= 1``): the CLI prints that one line
and exits 2 before it binds a port. Example (every key but ``model`` and ``stable`` optional)::

    model: smollm2-orders              # the model name clients send (also accepted: aliases)
    aliases: [smollm2-orders:1]
    stable: {url: http://127.0.0.1:8010, version: "1", served_model: "smollm2-orders:1"}
    canary: null                       # or {url, version, served_model}
    weight: 0                          # % of users on the canary, 0-100
    routing_file: routing.json         # watched; the admin API writes it too
    limits: {max_body_bytes: 1048576, max_tokens: 4096, rate_limit_rps: 0, rate_limit_burst: 0,
             token_budget_per_min: 0}
    timeouts: {connect_s: 5, first_byte_s: 60, read_s: 60}
    prices: {default: {input_per_1k: 0.0005, output_per_1k: 0.0015}, "2": {...}}   # USD, by version
    guardrails: {enabled: true, policy: evals/policies/safety.yaml}
    request_log: {enabled: true, dest: s3://tollgate, spool_dir: ..., batch_rows: 1000, flush_s: 2,
                  redact: true, store_text: true}
    upstream_metrics_poll_s: 2
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.errors import BadInput
from evals.settings import REPO_ROOT

DEFAULT_POLICY = REPO_ROOT / "evals" / "policies" / "safety.yaml"


@dataclass(frozen=True)
class Slot:
    """One upstream serving slot: where it is, which model version it serves, its served name."""

    url: str
    version: str
    served_model: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url, "version": self.version}
        if self.served_model:
            out["served_model"] = self.served_model
        return out


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20
    max_tokens: int = 4096
    rate_limit_rps: float = 0.0  # per API key; 0 = off
    rate_limit_burst: float = 0.0  # bucket size; 0 = max(1, rps)
    token_budget_per_min: int = 0  # per API key; 0 = off


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 5.0
    first_byte_s: float = 60.0  # request sent -> response head
    read_s: float = 60.0  # silence between two body pieces


@dataclass(frozen=True)
class Price:
    input_per_1k: float = 0.0
    output_per_1k: float = 0.0


@dataclass(frozen=True)
class RequestLogConfig:
    enabled: bool = True
    dest: str | None = None  # s3://BUCKET[/PREFIX] or a folder; None: s3://$TOLLGATE_S3_BUCKET
    spool_dir: Path | None = None  # None: $TOLLGATE_HOME/gateway/spool
    batch_rows: int = 1000
    flush_s: float = 2.0
    redact: bool = True
    store_text: bool = True


@dataclass(frozen=True)
class GatewayConfig:
    model: str
    stable: Slot
    canary: Slot | None = None
    weight: int = 0
    aliases: tuple[str, ...] = ()
    routing_file: Path | None = None
    limits: Limits = field(default_factory=Limits)
    timeouts: Timeouts = field(default_factory=Timeouts)
    prices: dict[str, Price] = field(default_factory=dict)
    guardrails_enabled: bool = True
    policy_path: Path = DEFAULT_POLICY
    request_log: RequestLogConfig = field(default_factory=RequestLogConfig)
    upstream_metrics_poll_s: float = 2.0
    source: str = "config"

    @property
    def accepted_models(self) -> frozenset[str]:
        return frozenset((self.model, *self.aliases))

    def price(self, version: str) -> Price:
        return self.prices.get(version) or self.prices.get("default") or Price()


class _Fields:
    """Reads one mapping, naming ``file: prefix.key`` in every complaint; unknown keys are refused."""

    def __init__(self, where: str, prefix: str, data: Any, known: set[str]) -> None:
        if not isinstance(data, dict):
            raise BadInput(f"{where}: {prefix or 'top level'} must be a mapping")
        unknown = set(data) - known
        if unknown:
            raise BadInput(f"{where}: unknown key(s) {', '.join(prefix + k for k in sorted(map(str, unknown)))}")
        self.where, self.prefix, self.data = where, prefix, data

    def name(self, key: str) -> str:
        return f"{self.where}: {self.prefix}{key}"

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.data.get(key, default)
        if value is None:
            if required:
                raise BadInput(f"{self.name(key)} is required")
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or str(value).strip() == "":
            raise BadInput(f"{self.name(key)} must be a non-empty string")
        return str(value)

    def number(self, key: str, default: float, *, integer: bool = False, minimum: float = 0,
               maximum: float | None = None) -> Any:
        value = self.data.get(key, default)
        kind = "an integer" if integer else "a number"
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise BadInput(f"{self.name(key)} must be {kind}, got {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f">= {minimum:g}"
            raise BadInput(f"{self.name(key)} must be {kind} {bound}, got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise BadInput(f"{self.name(key)} must be true or false, got {value!r}")
        return value


def parse_url(where: str, value: Any) -> str:
    """An http(s)://host:port[/v1] base URL, returned without a trailing /v1."""
    from urllib.parse import urlsplit

    if not isinstance(value, str) or not value:
        raise BadInput(f"{where} must be an http(s) URL")
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise BadInput(f"{where} {value!r} is not an http(s)://host[:port] URL")
    if parts.scheme == "https":
        raise BadInput(f"{where} {value!r}: https upstreams are not supported (put the gateway beside the slot)")
    return value.rstrip("/").removesuffix("/v1")


def parse_slot(where: str, prefix: str, data: Any) -> Slot:
    f = _Fields(where, prefix, data, {"url", "version", "served_model"})
    url = parse_url(f.name("url"), data.get("url"))
    return Slot(url=url, version=str(f.text("version", required=True)), served_model=f.text("served_model"))


def parse_weight(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise BadInput(f"{where} must be an integer between 0 and 100, got {value!r}")
    return value


def _prices(where: str, data: Any) -> dict[str, Price]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInput(f"{where}: prices must be a mapping of version (or default) to prices")
    out = {}
    for version, entry in data.items():
        f = _Fields(where, f"prices.{version}.", entry, {"input_per_1k", "output_per_1k"})
        out[str(version)] = Price(f.number("input_per_1k", 0.0), f.number("output_per_1k", 0.0))
    return out


def _request_log(where: str, data: Any, base: Path) -> RequestLogConfig:
    f = _Fields(where, "request_log.", data or {},
                {"enabled", "dest", "spool_dir", "batch_rows", "flush_s", "redact", "store_text"})
    dest = f.text("dest")
    if dest is not None and not dest.startswith("s3://"):
        if "://" in dest:
            raise BadInput(f"{f.name('dest')} {dest!r} must be s3://BUCKET[/PREFIX] or a folder")
        dest = str((base / dest).resolve())
    spool = f.text("spool_dir")
    return RequestLogConfig(
        enabled=f.flag("enabled", True), dest=dest, spool_dir=(base / spool).resolve() if spool else None,
        batch_rows=f.number("batch_rows", 1000, integer=True, minimum=1),
        flush_s=f.number("flush_s", 2.0, minimum=0.05), redact=f.flag("redact", True),
        store_text=f.flag("store_text", True))


TOP_KEYS = {"model", "aliases", "stable", "canary", "weight", "routing_file", "limits", "timeouts", "prices",
            "guardrails", "request_log", "upstream_metrics_poll_s"}


def parse_config(data: Any, where: str, base: Path) -> GatewayConfig:
    """The config from parsed YAML/JSON; relative paths are relative to ``base`` (the file's folder)."""
    f = _Fields(where, "", data, TOP_KEYS)
    if "stable" not in data:
        raise BadInput(f"{where}: stable is required ({{url, version}})")
    aliases = data.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise BadInput(f"{where}: aliases must be a list of model names")
    lim = _Fields(where, "limits.", data.get("limits") or {}, {
        "max_body_bytes", "max_tokens", "rate_limit_rps", "rate_limit_burst", "token_budget_per_min"})
    tmo = _Fields(where, "timeouts.", data.get("timeouts") or {}, {"connect_s", "first_byte_s", "read_s"})
    guard = _Fields(where, "guardrails.", data.get("guardrails") or {}, {"enabled", "policy"})
    policy = guard.text("policy")
    routing = f.text("routing_file")
    canary = data.get("canary")
    return GatewayConfig(
        model=str(f.text("model", required=True)),
        aliases=tuple(aliases),
        stable=parse_slot(where, "stable.", data["stable"]),
        canary=None if canary is None else parse_slot(where, "canary.", canary),
        weight=parse_weight(f"{where}: weight", data.get("weight", 0)),
        routing_file=(base / routing).resolve() if routing else None,
        limits=Limits(
            max_body_bytes=lim.number("max_body_bytes", 1 << 20, integer=True, minimum=64),
            max_tokens=lim.number("max_tokens", 4096, integer=True, minimum=1),
            rate_limit_rps=float(lim.number("rate_limit_rps", 0.0)),
            rate_limit_burst=float(lim.number("rate_limit_burst", 0.0)),
            token_budget_per_min=lim.number("token_budget_per_min", 0, integer=True)),
        timeouts=Timeouts(
            connect_s=float(tmo.number("connect_s", 5.0, minimum=0.01)),
            first_byte_s=float(tmo.number("first_byte_s", 60.0, minimum=0.01)),
            read_s=float(tmo.number("read_s", 60.0, minimum=0.01))),
        prices=_prices(where, data.get("prices")),
        guardrails_enabled=guard.flag("enabled", True),
        policy_path=(base / policy).resolve() if policy else DEFAULT_POLICY,
        request_log=_request_log(where, data.get("request_log"), base),
        upstream_metrics_poll_s=float(f.number("upstream_metrics_poll_s", 2.0, minimum=0.1)),
        source=where,
    )


def load_config(path: str | Path, flag: str = "--config") -> GatewayConfig:
    """Read and validate the config file (YAML, of which JSON is a subset)."""
    from evals import inputs

    p = Path(path)
    data = inputs.read_yaml(p, flag)
    if data is None:
        raise BadInput(f"{flag} {p}: the file is empty")
    cfg = parse_config(data, str(p), p.resolve().parent)
    if cfg.guardrails_enabled:
        from evals.suites.policy import load_policy

        load_policy(cfg.policy_path, f"{p}: guardrails.policy")
    return cfg
