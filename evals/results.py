"""The one results schema: `metrics` (numbers), optional `samples`, and `meta`.

Every command that measures something writes this shape, and every command
that judges something reads it through `load_results`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, TypeGuard

from evals import inputs
from evals.contract import MODEL_REF_HELP, is_model_name, is_model_version
from evals.errors import BadInput

SCHEMA_VERSION = 1


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_revision() -> str:
    """The code revision for provenance: env first (pods get it baked in), then git."""
    from evals import settings

    rev = settings.current().code_revision
    if rev:
        return rev
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def parse_model_ref(ref: str, flag: str = "--model") -> tuple[str, str]:
    """Split NAME:VERSION (evals.contract's patterns); anything else is bad input naming the flag."""
    name, sep, version = (ref if isinstance(ref, str) else "").partition(":")
    if not sep or not is_model_name(name) or not is_model_version(version):
        raise BadInput(f"{flag} {ref!r} is not {MODEL_REF_HELP}")
    return name, version


def is_number(value: object) -> TypeGuard[int | float]:
    """A finite int or float (not a bool): the only values a gate can judge."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write JSON via a temp file and rename, so a reader never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=False, allow_nan=True)
            fh.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def build_meta(*, model: str, version: str, suite: str, started: str, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "version": version,
        "suite": suite,
        "code_revision": code_revision(),
        "started_utc": started,
        "finished_utc": utc_now(),
    }
    meta.update(extra)
    return meta


def write_results(
    path: str | os.PathLike[str],
    *,
    metrics: dict[str, Any],
    meta: dict[str, Any],
    samples: list[dict[str, Any]] | None = None,
    **sections: Any,
) -> Path:
    """Write a results file. Non-finite metrics are written as null: a gate then fails closed."""
    clean = {k: (v if is_number(v) else None) for k, v in metrics.items()}
    payload: dict[str, Any] = {"metrics": clean, "meta": meta}
    payload.update(sections)
    if samples is not None:
        payload["samples"] = samples
    return write_json_atomic(path, payload)


def load_results(path: str | os.PathLike[str], flag: str = "--results") -> dict[str, Any]:
    """Read a results file; a file that is not the schema is bad input naming it."""
    p = Path(path)
    data = inputs.read_json(p, flag)
    if not isinstance(data, dict):
        raise BadInput(f"{flag} {p}: top level must be an object with 'metrics'")
    if not isinstance(data.get("metrics"), dict):
        raise BadInput(f"{flag} {p}: missing 'metrics' object")
    if "samples" in data and not isinstance(data["samples"], list):
        raise BadInput(f"{flag} {p}: 'samples' must be a list")
    return data
