"""The Tollgate gateway (``python -m gateway``) for the embedded default, on loopback.

    spec = gateway_spec(config_path, port=free_port(), admin_port=free_port(), admin_token=token)
    with ManagedServer(spec) as gw:      # ready when /healthz answers; stopped by process group
        ...

The admin token reaches the gateway through its environment (``TOLLGATE_GATEWAY_ADMIN_TOKEN``),
never through argv or the log. ``write_config`` writes a minimal config file for one stable slot.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from evals import settings
from evals.launcher.process import ServerSpec


def write_config(path: str | os.PathLike[str], *, model: str, stable_url: str, stable_version: str,
                 served_model: str | None = None, **extra: Any) -> Path:
    """A gateway config (JSON, which the YAML reader accepts) for one stable slot plus ``extra`` keys."""
    doc: dict[str, Any] = {"model": model, "stable": {"url": stable_url, "version": stable_version}}
    if served_model:
        doc["stable"]["served_model"] = served_model
    doc.update(extra)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=2) + "\n")
    return p


def gateway_spec(config: str | os.PathLike[str], *, port: int | None = None, admin_port: int | None = None,
                 workers: int | None = None, admin_token: str | None = None, name: str = "gateway",
                 env: dict[str, str] | None = None) -> ServerSpec:
    """A ServerSpec for the gateway; ports and workers default to the TOLLGATE_GATEWAY_* settings."""
    s = settings.current()
    port = port if port is not None else s.gateway_port
    admin_port = admin_port if admin_port is not None else s.gateway_admin_port
    argv = [sys.executable, "-m", "gateway", "--config", str(config), "--host", settings.LOOPBACK,
            "--port", str(port), "--admin-port", str(admin_port),
            "--workers", str(workers if workers is not None else s.gateway_workers)]
    full_env = {"PYTHONUNBUFFERED": "1", **(env or {})}
    if admin_token is not None:
        full_env["TOLLGATE_GATEWAY_ADMIN_TOKEN"] = admin_token
    return ServerSpec(name=name, argv=argv, port=port, health_path="/healthz",
                      port_env=settings.var_name(settings.Settings, "gateway_port"),
                      extra_ports=((admin_port, settings.var_name(settings.Settings, "gateway_admin_port")),),
                      env=full_env, ready_timeout_s=30.0, cwd=str(settings.REPO_ROOT),
                      # scraped by the embedded Prometheus while it runs (evals.launcher.targets)
                      scrape_job="tollgate-gateway")


def admin_url(spec: ServerSpec) -> str:
    """The admin API's base URL of a spec made by :func:`gateway_spec`."""
    return f"http://{spec.host}:{spec.extra_ports[0][0]}"
