"""Stage a published model version from S3 onto a volume: verified, atomic, resumable.

    python -m evals.stage --source s3://BUCKET/models/NAME/VERSION --dest DIR
                          [--keep N] [--protect VERSION ...]

Result: ``DIR/NAME/VERSION/`` holding exactly the manifest's files, every size and
sha256 checked, plus ``.tollgate-staged.json`` (the completion marker, naming the
manifest sha256) and ``.tollgate-manifest.json``. A reader never sees a half-staged
version: files are written under ``DIR/NAME/.VERSION.partial/`` on the same volume
and the folder is renamed into place only after everything verified.

- Idempotent: when the marker names the manifest now in S3 (and the sizes match),
  nothing is downloaded; that costs one small GET.
- Concurrent stagers of one version on a shared volume serialise on an exclusive
  ``flock`` of ``DIR/NAME/.VERSION.lock``; the second waits, then finds the
  marker and returns without downloading.
- Resumable: the partial folder records verified files (``.tollgate-progress.json``)
  and, for large files, the parts already written (``.tollgate-parts/``). After an
  interruption or an S3 failure the next run keeps those and fetches the rest; a
  resumed file that then fails its sha256 is fetched once more from scratch.
  A file that fails size or sha256 verification is deleted (the rest stays
  resumable) and the command exits 1. On a full disk the partial folder is removed
  to give the space back.
- Fast: large files are split in parts fetched with ranged GETs by a pool of
  threads writing with ``pwrite`` at their offsets; each file is hashed in order
  while later parts still arrive (hashlib, recv and pwrite release the GIL), so
  verification overlaps the transfer. Memory is one buffer per thread.
- ``--keep N`` evicts staged versions beyond the N most recently staged, never one
  that is protected: the version just staged, every ``--protect VERSION``, one with
  an in-use marker (a file ``DIR/NAME/.in-use/VERSION`` or
  ``DIR/NAME/.in-use/VERSION@HOLDER``, written by whoever serves it) or one that
  another stager holds locked.

Prints one JSON object on stdout (path, manifest_sha256, bytes, downloaded_bytes, ...).
Exit 0 staged, 1 verification/S3/disk failure (nothing published), 2 bad input.

This module is the staging protocol; the transfer engine is evals.weights.transfer,
the file-system primitives evals.weights.fs, retention evals.weights.retention.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evals.errors import BadInput, CheckFailed
from evals.results import utc_now, write_json_atomic
from evals.weights.config import MARKER, PARTS_DIR, PROGRESS, STAGED_MANIFEST, MiB, StageConfig
from evals.weights.fs import DiskFull, VersionLock, exchange, fsync_dir, is_disk_full, read_json
from evals.weights.manifest import MANIFEST_NAME, Manifest, sha256_bytes
from evals.weights.retention import evict_old_versions
from evals.weights.s3 import ModelLocation, parse_model_url, s3_client, translate
from evals.weights.transfer import FileJob, Transfer

log = logging.getLogger("tollgate.stage")


@dataclass
class StageResult:
    """What one stage run did; printed as one JSON object."""

    path: str
    source: str
    manifest_sha256: str
    files: int
    bytes: int
    downloaded_bytes: int = 0
    reused_files: int = 0
    already_staged: bool = False
    seconds: float = 0.0
    evicted: list[str] = field(default_factory=list)


def is_staged(folder: Path, manifest: Manifest, manifest_sha: str) -> bool:
    """The marker names this manifest and every file has its size: a cheap, complete check."""
    marker = read_json(folder / MARKER)
    if not marker or marker.get("manifest_sha256") != manifest_sha:
        return False
    try:
        return all((folder / f.path).stat().st_size == f.size for f in manifest.files)
    except OSError:
        return False


def fetch_manifest(client: Any, loc: ModelLocation) -> tuple[Manifest, bytes]:
    """The version's manifest and its bytes as stored (their sha256 is the version's identity)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        data = client.get_object(Bucket=loc.bucket, Key=loc.key(MANIFEST_NAME))["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        err = translate(exc, loc.url_of(MANIFEST_NAME))
        if isinstance(err, BadInput) and "no such object" in str(err):
            err = BadInput(f"{loc.url_of(MANIFEST_NAME)}: no such object (version not published, or its "
                           "publish did not finish)")
        raise err from None
    return Manifest.from_bytes(data, loc.url_of(MANIFEST_NAME)), data


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def stage_weights(source: str, dest: Path | str, *, keep: int | None = None, protect: Sequence[str] = (),
                  config: StageConfig | None = None, client: Any = None) -> StageResult:
    """Stage SOURCE (s3://bucket/.../NAME/VERSION) to DEST/NAME/VERSION; see the module docstring."""
    started = time.monotonic()
    cfg = config or StageConfig.from_env()
    loc = parse_model_url(source, "--source")
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise BadInput(f"--dest {dest}: exists and is not a folder")
    if keep is not None and keep < 1:
        raise BadInput(f"--keep {keep} must be at least 1")
    client = client or s3_client(max_pool_connections=cfg.concurrency + 4)
    manifest, manifest_bytes = fetch_manifest(client, loc)
    manifest_sha = sha256_bytes(manifest_bytes)
    model_dir = dest / loc.name
    final = model_dir / loc.version

    def result(**kw: Any) -> StageResult:
        return StageResult(path=str(final), source=loc.url, manifest_sha256=manifest_sha, files=len(manifest.files),
                           bytes=manifest.total_size, seconds=round(time.monotonic() - started, 3), **kw)

    if is_staged(final, manifest, manifest_sha):
        log.info("%s already staged at %s (manifest %s...)", loc.url, final, manifest_sha[:12])
        res = result(already_staged=True)
        res.evicted = evict_old_versions(model_dir, keep, {loc.version, *protect}) if keep else []
        return res

    _writable_model_dir(dest, model_dir)
    lock = VersionLock(model_dir / f".{loc.version}.lock")
    lock.acquire(cfg.lock_timeout_s)
    try:
        if is_staged(final, manifest, manifest_sha):  # another stager finished while we waited
            log.info("%s was staged by another stager while we waited", loc.url)
            res = result(already_staged=True)
        else:
            res = _stage_locked(client, loc, manifest, manifest_bytes, manifest_sha, final, cfg, result)
    finally:
        lock.release()
    if keep:
        res.evicted = evict_old_versions(model_dir, keep, {loc.version, *protect})
    res.seconds = round(time.monotonic() - started, 3)
    return res


def _writable_model_dir(dest: Path, model_dir: Path) -> None:
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--dest {dest}: cannot create {model_dir} ({exc.strerror})") from None
    if not os.access(model_dir, os.W_OK):
        raise BadInput(f"--dest {dest}: {model_dir} is not writable")


def _stage_locked(client: Any, loc: ModelLocation, manifest: Manifest, manifest_bytes: bytes, manifest_sha: str,
                  final: Path, cfg: StageConfig, result: Callable[..., StageResult]) -> StageResult:
    """Under the version lock: resume what an earlier run left, fetch the rest, verify, publish."""
    partial = final.parent / f".{loc.version}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    parts_dir = partial / PARTS_DIR
    parts_dir.mkdir(exist_ok=True)
    progress_path = partial / PROGRESS
    kept = _kept_from_earlier_run(partial, manifest, progress_path)
    jobs = _plan_jobs(partial, parts_dir, manifest, kept, cfg)
    need = sum(j.entry.size for j in jobs) - sum(j.journaled_bytes for j in jobs)
    _check_free_space(final, partial, jobs, need, cfg)
    if kept:
        log.info("resuming: %d verified file(s) kept, %s to fetch", len(kept), _human(need))
    on_verified = _progress_recorder(progress_path, manifest_sha, kept)
    received = _fetch(client, loc, cfg, partial, jobs, need, on_verified)
    _publish(partial, final, loc, manifest, manifest_bytes, manifest_sha, cfg)
    log.info("staged %s at %s", loc.url, final)
    return result(downloaded_bytes=received, reused_files=len(manifest.files) - len(jobs))


def _kept_from_earlier_run(partial: Path, manifest: Manifest, progress_path: Path) -> dict[str, list[Any]]:
    """Keep what an earlier run verified, if the manifest still lists it unchanged; drop the rest."""
    state = read_json(progress_path) or {}
    verified: dict[str, list[Any]] = state.get("verified", {}) if isinstance(state.get("verified"), dict) else {}
    wanted = {f.path: f for f in manifest.files}
    kept: dict[str, list[Any]] = {}
    for rel, rec in verified.items():
        entry = wanted.get(rel)
        path = partial / rel
        if entry and rec == [entry.size, entry.sha256] and path.is_file() and path.stat().st_size == entry.size:
            kept[rel] = rec
    _remove_strays(partial, set(wanted), keep={PROGRESS, PARTS_DIR})
    return kept


def _plan_jobs(partial: Path, parts_dir: Path, manifest: Manifest, kept: dict[str, list[Any]],
               cfg: StageConfig) -> list[FileJob]:
    """One job per file still to fetch, each with its part journal if it is large; stale journals go."""
    jobs: list[FileJob] = []
    for entry in sorted(manifest.files, key=lambda f: -f.size):  # big first: they bound the wall time
        if entry.path in kept:
            continue
        target = (partial / entry.path).resolve()
        if partial.resolve() not in target.parents:
            raise BadInput(f"manifest entry {entry.path!r} escapes the destination")
        journal_key = sha256_bytes(f"{entry.path}|{entry.size}|{entry.sha256}|{cfg.part_size}".encode())[:32]
        multi = entry.size > cfg.part_size
        jobs.append(FileJob(entry, target, parts_dir / journal_key if multi else None, cfg.part_size))
    keep_journals = {j.journal.name for j in jobs if j.journal is not None}
    for stale in parts_dir.iterdir():
        if stale.name not in keep_journals:
            stale.unlink(missing_ok=True)
    return jobs


def _check_free_space(final: Path, partial: Path, jobs: Sequence[FileJob], need: int, cfg: StageConfig) -> None:
    free = cfg.free_bytes if cfg.free_bytes is not None else shutil.disk_usage(partial).free
    if need > free:
        for j in jobs:
            j.close()
        raise CheckFailed(f"not enough free space on {final.parent}: need {_human(need)}, {_human(free)} free; "
                          "nothing downloaded")


def _progress_recorder(progress_path: Path, manifest_sha: str,
                       kept: dict[str, list[Any]]) -> Callable[[FileJob], None]:
    """The callback that records each verified file in the progress file (called from the workers)."""
    state_lock = threading.Lock()

    def on_verified(job: FileJob) -> None:
        with state_lock:
            kept[job.entry.path] = [job.entry.size, job.entry.sha256]
            try:
                write_json_atomic(progress_path, {"manifest_sha256": manifest_sha, "verified": kept})
            except OSError as exc:
                # The disk can fill between two parts; the progress file is where it shows first.
                if is_disk_full(exc):
                    raise DiskFull(f"disk full writing the progress file ({exc.strerror}); nothing published") from None
                raise
        if job.journal is not None:
            job.journal.unlink(missing_ok=True)

    return on_verified


def _fetch(client: Any, loc: ModelLocation, cfg: StageConfig, partial: Path, jobs: Sequence[FileJob], need: int,
           on_verified: Callable[[FileJob], None]) -> int:
    """Run the transfer of every job's missing parts; returns the bytes received."""
    transfer = Transfer(client, loc, cfg, need, on_verified)
    # Round-robin over files, part by part: every file's hash frontier advances while
    # the transfer runs, so little hashing is left when the last byte arrives.
    pending = [j.reset(keep_journal=True) for j in jobs]
    transfer.submit((j, todo[k]) for k in range(max(map(len, pending), default=0))
                    for j, todo in zip(jobs, pending, strict=True) if k < len(todo))
    t0 = time.monotonic()

    def progress(received: int) -> None:
        elapsed = max(time.monotonic() - t0, 1e-9)
        rate = received / elapsed
        eta = (need - received) / rate if rate > 0 else float("inf")
        log.info("staging %s: %s / %s (%.0f%%), %.0f MB/s, ETA %.0f s", loc.url, _human(received), _human(need),
                 100.0 * received / max(need, 1), rate / 1e6, eta)

    try:
        transfer.run(progress)
    except DiskFull:
        for j in jobs:
            j.close()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        for j in jobs:
            j.close()
    elapsed = max(time.monotonic() - t0, 1e-9)
    if need:
        log.info("fetched and verified %s in %.2f s (%.0f MB/s)", _human(transfer.received), elapsed,
                 transfer.received / 1e6 / elapsed)
    return transfer.received


def _publish(partial: Path, final: Path, loc: ModelLocation, manifest: Manifest, manifest_bytes: bytes,
             manifest_sha: str, cfg: StageConfig) -> None:
    """Publish: marker inside, then one rename. The marker is written last and durably."""
    _write_marker(partial, loc, manifest, manifest_bytes, manifest_sha)
    os.chmod(partial / MARKER, 0o644)  # serving pods may run as another user; mkstemp made it 0600
    (partial / PROGRESS).unlink(missing_ok=True)
    shutil.rmtree(partial / PARTS_DIR, ignore_errors=True)
    if cfg.fsync:
        for d in {partial, *[(partial / f.path).parent for f in manifest.files]}:
            fsync_dir(d)
    _move_into_place(partial, final)
    if cfg.fsync:
        fsync_dir(final.parent)


def _write_marker(partial: Path, loc: ModelLocation, manifest: Manifest, manifest_bytes: bytes,
                  manifest_sha: str) -> None:
    try:
        (partial / STAGED_MANIFEST).write_bytes(manifest_bytes)
        write_json_atomic(partial / MARKER, {
            "manifest_sha256": manifest_sha, "source": loc.url, "name": loc.name, "version": loc.version,
            "files": len(manifest.files), "bytes": manifest.total_size, "staged_utc": utc_now(),
            "staged_unix_ns": time.time_ns(),  # orders versions for --keep; UTC seconds tie too often
        })
    except OSError as exc:
        if is_disk_full(exc):
            shutil.rmtree(partial, ignore_errors=True)
            raise DiskFull(f"disk full writing the completion marker ({exc.strerror}); nothing published") from None
        raise


def _remove_strays(partial: Path, wanted: set[str], keep: set[str]) -> None:
    """Files in the partial folder the manifest does not list (an older content of this version)."""
    for root, dirs, names in os.walk(partial, topdown=True):
        rel_root = Path(root).relative_to(partial)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in keep]
        for n in names:
            rel = (rel_root / n).as_posix()
            if rel not in wanted and not (rel_root == Path(".") and n in keep):
                (Path(root) / n).unlink(missing_ok=True)


def _move_into_place(partial: Path, final: Path) -> None:
    if not final.exists():
        os.rename(partial, final)
        return
    # A stale copy (the version was re-published with --force): swap atomically so
    # the path is never missing, then delete the old one.
    trash = final.parent / f".{final.name}.trash-{os.getpid()}"
    if exchange(partial, final):
        os.rename(partial, trash)
    else:
        os.rename(final, trash)
        os.rename(partial, final)
    shutil.rmtree(trash, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evals.stage``: parse the flags, stage, print the result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m evals.stage",
                                     description="Stage a model version from S3 onto a volume, verified and atomic.")
    parser.add_argument("--source", required=True, help="s3://BUCKET/models/NAME/VERSION")
    parser.add_argument("--dest", required=True, help="volume folder; the model lands in DEST/NAME/VERSION")
    parser.add_argument("--keep", type=int, default=None, help="keep the N most recently staged versions of NAME")
    parser.add_argument("--protect", action="append", default=[], metavar="VERSION",
                        help="never evict this version (repeatable; e.g. the champion's)")
    parser.add_argument("--concurrency", type=int, default=None, help="parallel GETs (default 16)")
    parser.add_argument("--part-size-mb", type=int, default=None, help="ranged GET size for large files (64)")
    parser.add_argument("--no-fsync", dest="fsync", action="store_false", default=None,
                        help="skip fsync before the marker (scratch volumes only)")
    args = parser.parse_args(argv)
    cfg = StageConfig.from_env(
        concurrency=args.concurrency,
        part_size=args.part_size_mb * MiB if args.part_size_mb is not None else None,
        fsync=args.fsync,
    )
    res = stage_weights(args.source, Path(args.dest), keep=args.keep, protect=args.protect, config=cfg)
    print(json.dumps(asdict(res)))
    return 0
