"""Prometheus file-based service discovery: one JSON file per scraped server.

A server that the project starts registers itself here and Prometheus (which watches
the folder, see evals.launcher.prometheus) starts scraping it within a refresh
interval; unregistering deletes the file and the series go stale. Files live in
``$TOLLGATE_HOME/prometheus/targets/JOB--NAME.json`` so that ``stop-all`` can remove
the targets of the servers it stops by their pid-file name, and so that a test with
its own TOLLGATE_HOME sees only its own servers.

This module imports nothing of the launcher (the launcher's process module uses it).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from evals import settings
from evals.errors import BadInput

JOBS = ("tollgate-gateway", "vllm", "airflow")
"""The scrape jobs of the embedded Prometheus (its config has one file_sd block per job)."""

_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
_ADDRESS = re.compile(r"[A-Za-z0-9_.-]+:[0-9]{1,5}")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def targets_dir() -> Path:
    """Where the embedded Prometheus looks for targets (per TOLLGATE_HOME)."""
    return settings.home() / "prometheus" / "targets"


def target_path(job: str, name: str, directory: Path | None = None) -> Path:
    if job not in JOBS:
        raise BadInput(f"unknown scrape job {job!r} (expected one of {', '.join(JOBS)})")
    if not _NAME.fullmatch(name) or "--" in name:
        raise BadInput(f"target name {name!r} must be letters, digits, '_', '.', ':', '-' (no '--')")
    return Path(directory or targets_dir()) / f"{job}--{name}.json"


def register_target(job: str, name: str, address: str, labels: Mapping[str, str] | None = None,
                    *, directory: Path | None = None) -> Path:
    """Write (atomically) the file_sd entry of one server; Prometheus picks it up on its next refresh."""
    if not _ADDRESS.fullmatch(address):
        raise BadInput(f"scrape address {address!r} must be HOST:PORT")
    extra = dict(labels or {})
    for key in extra:
        if not _LABEL.fullmatch(key) or key.startswith("__"):
            raise BadInput(f"label name {key!r} is not a valid Prometheus label")
    path = target_path(job, name, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = [{"targets": [address], "labels": {"tollgate_target": name, **{k: str(v) for k, v in extra.items()}}}]
    # Prometheus may read the file at any moment: write a sibling and rename it into place.
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh)
    os.replace(tmp, path)
    return path


def unregister_target(job: str, name: str, *, directory: Path | None = None) -> bool:
    """Remove one server's entry; True if there was one."""
    path = target_path(job, name, directory)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def unregister_name(name: str, *, directory: Path | None = None) -> int:
    """Remove the entries of ``name`` under every job (``stop-all`` knows only the pid-file name)."""
    removed = 0
    for job in JOBS:
        removed += unregister_target(job, name, directory=directory)
    return removed


def registered(directory: Path | None = None) -> dict[str, list[dict]]:
    """job -> the file_sd entries now registered (for status lines and tests)."""
    out: dict[str, list[dict]] = {job: [] for job in JOBS}
    d = Path(directory or targets_dir())
    for path in sorted(d.glob("*--*.json")):
        job = path.name.split("--", 1)[0]
        if job in out:
            try:
                out[job].extend(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
    return out
