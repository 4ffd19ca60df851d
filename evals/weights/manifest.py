"""The weights manifest: what a published model version is made of.

``MANIFEST.json`` sits beside the weights in S3 and is written last by
``evals.publish``; a version without it does not exist for ``evals.stage``.
It lists every file's relative path, size and sha256, plus the manifest's own
format version. The sha256 of the manifest bytes as stored is the version's
identity: MLflow records it, and the stage completion marker repeats it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from evals.errors import BadInput
from evals.results import sha256_file, utc_now

MANIFEST_NAME = "MANIFEST.json"
FORMAT = "tollgate.weights-manifest"
FORMAT_VERSION = 1
# Names under this prefix are ours (markers, progress state) and may not appear in a model.
RESERVED_PREFIX = ".tollgate"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_relpath(path: object, where: str) -> str:
    """A manifest path must stay inside the model folder: relative, no '..', no tricks."""
    if not isinstance(path, str) or not path:
        raise BadInput(f"{where}: path must be a non-empty string")
    if "\\" in path or "\x00" in path or path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise BadInput(f"{where}: path {path!r} is absolute or not a POSIX relative path")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BadInput(f"{where}: path {path!r} contains '..', '.' or an empty component")
    if parts[0].startswith(RESERVED_PREFIX) or path == MANIFEST_NAME:
        raise BadInput(f"{where}: path {path!r} uses a name reserved for Tollgate")
    return str(PurePosixPath(path))


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    files: tuple[ManifestEntry, ...]
    created_utc: str = ""

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def same_content(self, other: Manifest) -> bool:
        """Equal files (path, size, sha256): the creation time does not make a new version."""
        return sorted(self.files, key=lambda f: f.path) == sorted(other.files, key=lambda f: f.path)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "created_utc": self.created_utc,
            "total_size": self.total_size,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> Manifest:
        """Parse and validate; anything unexpected is bad input naming the manifest and entry."""
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadInput(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BadInput(f"{source}: not a Tollgate weights manifest (format must be {FORMAT!r})")
        if doc.get("format_version") != FORMAT_VERSION:
            raise BadInput(f"{source}: format_version {doc.get('format_version')!r} is not supported "
                           f"(this code reads {FORMAT_VERSION})")
        files = doc.get("files")
        if not isinstance(files, list) or not files:
            raise BadInput(f"{source}: 'files' must be a non-empty list")
        entries: list[ManifestEntry] = []
        seen: set[str] = set()
        for i, item in enumerate(files):
            where = f"{source}: files[{i}]"
            if not isinstance(item, dict):
                raise BadInput(f"{where}: must be an object with path, size, sha256")
            path = check_relpath(item.get("path"), where)
            size, digest = item.get("size"), item.get("sha256")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadInput(f"{where}: size {size!r} is not a non-negative integer")
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                raise BadInput(f"{where}: sha256 {digest!r} is not 64 lowercase hex digits")
            folded = path.lower()  # two paths differing in case would collide on some volumes
            if folded in seen or any(folded.startswith(s + "/") or s.startswith(folded + "/") for s in seen):
                raise BadInput(f"{where}: path {path!r} collides with another entry")
            seen.add(folded)
            entries.append(ManifestEntry(path, size, digest))
        name, version = doc.get("name", ""), doc.get("version", "")
        return cls(name=str(name), version=str(version), files=tuple(entries),
                   created_utc=str(doc.get("created_utc", "")))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_files(folder: Path) -> list[str]:
    """Relative POSIX paths of the files to publish, sorted.

    Dot-files and dot-folders are tool state (.cache, .git, our own markers) and are
    not part of a model. Symlinked files are followed: Hugging Face snapshots are links.
    """
    out: list[str] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in names:
            if n.startswith("."):
                continue
            p = Path(root, n)
            if p.is_file():
                out.append(p.relative_to(folder).as_posix())
    return sorted(out)


def build_manifest(folder: Path, name: str, version: str, *, threads: int = 4,
                   paths: Iterable[str] | None = None) -> Manifest:
    """Hash the folder's files in parallel (hashlib releases the GIL) into a manifest."""
    rels = list(paths) if paths is not None else model_files(folder)
    if not rels:
        raise BadInput(f"--source {folder}: no files to publish")
    for rel in rels:
        check_relpath(rel, f"--source {folder}")

    def one(rel: str) -> ManifestEntry:
        p = folder / rel
        return ManifestEntry(rel, p.stat().st_size, sha256_file(p))

    with ThreadPoolExecutor(max(1, threads)) as pool:
        entries = tuple(pool.map(one, rels))
    return Manifest(name=name, version=version, files=entries, created_utc=utc_now())
