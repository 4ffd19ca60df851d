"""Prometheus of the embedded default: Debian's server, 127.0.0.1, file-based discovery, our rules.

The configuration is generated into ``$TOLLGATE_HOME/prometheus/prometheus.yml`` at
start: one scrape job per kind of server (``tollgate-gateway``, ``vllm``, ``airflow``),
each discovering its targets from the JSON files that the servers' own launcher
writes while they run (:func:`register_target`, see evals.launcher.targets), plus
Prometheus itself. The recording and alert rules of ``infra/monitoring/rules/`` are
loaded as they are in production. Scrape and evaluation run every
``TOLLGATE_PROMETHEUS_INTERVAL`` (2 s by default: a demo or a test sees a request in
Prometheus within seconds, not a minute).

    python -m evals.launcher.prometheus serve     # foreground; Ctrl-C stops it
    python -m evals.launcher.prometheus start     # background; stop with python -m evals.launcher stop-all
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import yaml

from evals import settings
from evals.errors import BadInput
from evals.launcher.process import ManagedServer, ServerSpec
from evals.launcher.targets import JOBS, register_target, registered, targets_dir, unregister_target

RULES_DIR = settings.REPO_ROOT / "infra" / "monitoring" / "rules"

__all__ = ["JOBS", "RULES_DIR", "prometheus_config", "prometheus_spec", "register_target", "registered",
           "targets_dir", "unregister_target"]


def prometheus_config(targets: Path, *, interval: str, rules_dir: Path = RULES_DIR,
                      self_address: str | None = None) -> dict:
    """The scrape configuration: a file_sd job per kind of server, refreshed every few seconds."""
    scrape_configs: list[dict] = []
    if self_address:
        scrape_configs.append({"job_name": "prometheus", "static_configs": [{"targets": [self_address]}]})
    for job in JOBS:
        scrape_configs.append({
            "job_name": job,
            "metrics_path": "/metrics",
            "file_sd_configs": [{"files": [str(targets / f"{job}--*.json")], "refresh_interval": interval}],
        })
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval,
                   "external_labels": {"tollgate": "embedded"}},
        "rule_files": [str(rules_dir / "*.yaml")],
        "scrape_configs": scrape_configs,
    }


def prometheus_spec(port: int | None = None, *, state_dir: Path | None = None, targets: Path | None = None,
                    interval: str | None = None, rules_dir: Path = RULES_DIR, retention: str = "7d",
                    name: str = "prometheus") -> ServerSpec:
    """Debian's /usr/bin/prometheus on 127.0.0.1 with its own data folder under TOLLGATE_HOME."""
    env_settings = settings.current()
    port = port if port is not None else env_settings.prometheus_port
    binary = env_settings.prometheus_bin
    if not binary.is_file():
        raise BadInput(f"{settings.var_name(settings.Settings, 'prometheus_bin')}={binary}: no such file "
                       "(run ./tollgate setup: it installs Debian's prometheus package)")
    if not rules_dir.is_dir():
        raise BadInput(f"rules folder {rules_dir} does not exist")
    state = Path(state_dir or settings.home() / "prometheus")
    targets = Path(targets or targets_dir())
    data = state / "data"
    for d in (state, targets, data):
        d.mkdir(parents=True, exist_ok=True)
    address = f"{settings.LOOPBACK}:{port}"
    config = prometheus_config(targets, interval=interval or env_settings.prometheus_interval, rules_dir=rules_dir,
                               self_address=address)
    config_path = state / f"prometheus-{port}.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [
        str(binary),
        f"--config.file={config_path}",
        f"--web.listen-address={address}",
        f"--storage.tsdb.path={data}",
        f"--storage.tsdb.retention.time={retention}",
        "--web.enable-lifecycle",  # POST /-/reload re-reads the rules without a restart
        "--log.level=warn",
    ]
    return ServerSpec(name=name, argv=argv, port=port, health_path="/-/ready",
                      port_env=settings.var_name(settings.Settings, "prometheus_port"), ready_timeout_s=60.0)


def main(argv: Sequence[str] | None = None) -> int:
    """``serve`` (foreground until Ctrl-C) or ``start`` (background, ready when it returns)."""
    parser = argparse.ArgumentParser(prog="python -m evals.launcher.prometheus", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("serve", "start"))
    parser.add_argument("--port", type=lambda raw: settings.port("--port", raw), default=None)
    args = parser.parse_args(argv)
    try:
        server = ManagedServer(prometheus_spec(args.port))
        server.start()
        server.wait_ready()
    except BadInput as exc:
        print(f"prometheus: error: {exc}", file=sys.stderr)
        return 2
    print(f"Prometheus at {server.spec.base_url} (targets in {targets_dir()}, log {server.log_path})", flush=True)
    if args.command == "start":
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0) and server.proc is not None and server.proc.poll() is None:
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
