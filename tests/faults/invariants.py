"""The invariants every fault case asserts, besides what its row says.

- no wrong promotion: ``alias_is`` (the alias is what it was, or what a passed run set);
- nothing half-staged visible: ``nothing_half_staged`` (every non-hidden version folder
  on a volume carries the staged marker and every file the marker lists, at its size);
- no record lost: ``every_run_ended`` (each DAG run that started a promotion has an
  ending audit record, none left pending);
- no secret in any log: ``no_secret_in`` (every file under the given folders and every
  captured text, for every secret the case generated or was handed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from evals.weights.config import MARKER, STAGED_MANIFEST

MIN_SECRET = 8  # shorter strings are not secrets we generate, and would match by chance


def no_secret_in(secrets: Iterable[str], paths: Iterable[str | os.PathLike[str]] = (),
                 texts: Iterable[str] = ()) -> int:
    """Fail naming the file when any secret appears; returns how many files were scanned."""
    wanted = [s for s in secrets if s and len(s) >= MIN_SECRET]
    assert wanted, "a secrets scan needs the secrets it looks for"
    scanned = 0
    for text in texts:
        for s in wanted:
            assert s not in text, f"a secret ({s[:3]}...) appears in captured output"
    for root in paths:
        root = Path(root)
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
        for f in files:
            try:
                data = f.read_bytes()
            except OSError:
                continue
            scanned += 1
            for s in wanted:
                assert s.encode() not in data, f"a secret ({s[:3]}...) appears in {f}"
    return scanned


def visible_versions(volume: str | os.PathLike[str]) -> list[Path]:
    """Version folders a server could load: VOLUME/NAME/VERSION, not hidden."""
    root = Path(volume)
    if not root.is_dir():
        return []
    return [v for m in root.iterdir() if m.is_dir() and not m.name.startswith(".")
            for v in m.iterdir() if v.is_dir() and not v.name.startswith(".")]


def nothing_half_staged(volume: str | os.PathLike[str]) -> list[Path]:
    """Every visible version is complete (marker + every listed file at its size); returns them."""
    found = visible_versions(volume)
    for v in found:
        marker = v / MARKER
        assert marker.is_file(), f"{v} is visible without a staged marker: half-staged"
        doc = json.loads(marker.read_text())
        manifest = json.loads((v / STAGED_MANIFEST).read_text())
        assert doc["files"] == len(manifest["files"]), f"{v}: the marker and the staged manifest disagree"
        for entry in manifest["files"]:
            f = v / entry["path"]
            assert f.is_file(), f"{v}: {entry['path']} missing in a visible version"
            assert f.stat().st_size == entry["size"], f"{v}: {entry['path']} has the wrong size"
    return found


def alias_is(model: str, alias: str, expected: str | None) -> None:
    from tollgate.mlflow import registry

    got = registry.get_alias(model, alias)
    assert got == expected, f"{model}@{alias} is {got}, expected {expected}: a wrong promotion"


def every_run_ended(model: str, dag_run_ids: Iterable[str], alias: str | None = None) -> list:
    """Each DAG run has at least one audit record and none of its records is pending."""
    from tollgate.mlflow import registry

    records = registry.alias_history(model, alias)
    for run_id in dag_run_ids:
        mine = [r for r in records if r.dag_run_id == run_id]
        assert mine, f"DAG run {run_id} of {model} left no audit record: a lost record"
        pending = [r for r in mine if r.status == "pending"]
        assert not pending, f"DAG run {run_id} left a pending record: {pending}"
    return records
