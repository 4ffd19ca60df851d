"""Retention of staged versions on a volume: ``--keep N`` evicts the oldest, never one in use.

A version is protected when it is named (the version just staged, every ``--protect``),
marked in use by whoever serves it (a file ``DIR/NAME/.in-use/VERSION`` or
``DIR/NAME/.in-use/VERSION@HOLDER``), or locked by another stager. Only folders with a
completion marker are ours to delete; they are ordered by when they were staged.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from evals.weights.config import IN_USE_DIR, MARKER
from evals.weights.fs import VersionLock, read_json

log = logging.getLogger("tollgate.stage")


def in_use_versions(model_dir: Path) -> set[str]:
    """Versions some server marked in use: DIR/NAME/.in-use/VERSION[@HOLDER]."""
    d = model_dir / IN_USE_DIR
    if not d.is_dir():
        return set()
    return {p.name.split("@", 1)[0] for p in d.iterdir()}


def evict_old_versions(model_dir: Path, keep: int | None, protect: Iterable[str]) -> list[str]:
    """Delete staged versions beyond the KEEP most recently staged, except protected ones."""
    if not keep or not model_dir.is_dir():
        return []
    protected = set(protect) | in_use_versions(model_dir)
    staged: list[tuple[int, str]] = []
    for d in model_dir.iterdir():
        if d.name.startswith(".") or not d.is_dir():
            continue
        marker = read_json(d / MARKER)
        if marker is None:
            continue  # not ours, or not complete: never touch it
        staged.append((int(marker.get("staged_unix_ns", 0) or 0), d.name))
    staged.sort(reverse=True)
    evicted: list[str] = []
    for _, version in staged[keep:]:
        if version in protected:
            continue
        lock = VersionLock(model_dir / f".{version}.lock")
        if not lock.acquire(0, blocking=False):
            log.info("not evicting %s: another stager holds it", version)
            continue
        try:
            trash = model_dir / f".{version}.evicting-{os.getpid()}"
            os.rename(model_dir / version, trash)  # gone for readers in one step
            shutil.rmtree(trash, ignore_errors=True)
            evicted.append(version)
            log.info("evicted %s/%s (keeping %d)", model_dir.name, version, keep)
        finally:
            lock.release()
    return evicted
