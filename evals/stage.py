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
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import http.client
import json
import logging
import math
import mmap
import os
import random
import select
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evals.errors import BadInput, CheckFailed
from evals.manifest import MANIFEST_NAME, Manifest, ManifestEntry, sha256_bytes
from evals.results import utc_now, write_json_atomic
from evals.s3 import ModelLocation, error_code, http_status, parse_model_url, s3_client, translate

log = logging.getLogger("tollgate.stage")

MARKER = ".tollgate-staged.json"
STAGED_MANIFEST = ".tollgate-manifest.json"
PROGRESS = ".tollgate-progress.json"
PARTS_DIR = ".tollgate-parts"
IN_USE_DIR = ".in-use"
MiB = 1 << 20


@dataclass(frozen=True)
class StageConfig:
    """Transfer knobs; each has a TOLLGATE_STAGE_* environment override."""

    part_size: int = 64 * MiB
    concurrency: int = 16
    buffer_size: int = 4 * MiB  # per thread: memory stays <= concurrency x buffer_size
    part_attempts: int = 5  # mid-stream failures (reset, stall) per part, resumed at the byte reached
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 10.0
    progress_interval_s: float = 5.0
    lock_timeout_s: float = 3600.0
    fsync: bool = True  # the marker must never name data still only in the page cache
    free_bytes: int | None = None  # override of the free-space probe (quota-backed volumes, tests)
    splice: bool = True  # plain-HTTP bodies go socket -> pipe -> file in the kernel (Linux splice)
    mmap_hash: bool = True  # hash parts through a read-only mapping instead of copying them back

    @classmethod
    def from_env(cls, **overrides: Any) -> StageConfig:
        def num(var: str, default: Any, cast: Callable[[str], Any]) -> Any:
            raw = os.environ.get(var, "")
            if not raw:
                return default
            try:
                value = cast(raw)
            except ValueError:
                raise BadInput(f"{var}={raw!r} is not a number") from None
            if value < 0:
                raise BadInput(f"{var}={raw!r} must not be negative")
            return value

        values: dict[str, Any] = {
            "part_size": num("TOLLGATE_STAGE_PART_MB", cls.part_size // MiB, int) * MiB,
            "concurrency": num("TOLLGATE_STAGE_CONCURRENCY", cls.concurrency, int),
            "part_attempts": num("TOLLGATE_STAGE_PART_ATTEMPTS", cls.part_attempts, int),
            "backoff_base_s": num("TOLLGATE_STAGE_BACKOFF_S", cls.backoff_base_s, float),
            "progress_interval_s": num("TOLLGATE_STAGE_PROGRESS_S", cls.progress_interval_s, float),
            "lock_timeout_s": num("TOLLGATE_STAGE_LOCK_TIMEOUT", cls.lock_timeout_s, float),
            "free_bytes": num("TOLLGATE_STAGE_FREE_BYTES", None, int),
            "splice": os.environ.get("TOLLGATE_STAGE_SPLICE", "1") not in ("0", "false", "no"),
            "mmap_hash": os.environ.get("TOLLGATE_STAGE_MMAP_HASH", "1") not in ("0", "false", "no"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        cfg = cls(**values)
        if cfg.part_size < MiB or cfg.concurrency < 1 or cfg.part_attempts < 1:
            raise BadInput("part size must be >= 1 MiB, concurrency and part attempts >= 1")
        return cfg


@dataclass
class StageResult:
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


# -- small pieces of file-system plumbing -------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


_RENAME_EXCHANGE = 2
_F_SETPIPE_SZ = 1031
_SYNC_FILE_RANGE_WRITE = 2
_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _LIBC = False
    return _LIBC


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a verified range to disk now (Linux sync_file_range).

    The fsync before the marker then finds little left to flush, instead of the whole
    model at once. Best effort: a no-op where the call does not exist.
    """
    fn = getattr(_libc() or None, "sync_file_range", None)
    if fn is not None:
        fn(ctypes.c_int(fd), ctypes.c_int64(offset), ctypes.c_int64(length), ctypes.c_uint(_SYNC_FILE_RANGE_WRITE))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the call is unavailable."""
    fn = getattr(_libc() or None, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _hash_mapped(hasher: Any, fd: int, start: int, end: int) -> None:
    """Hash a file range straight from the page cache through a read-only mapping: no copy.

    Safe here because nobody else writes the partial folder while we hold the version lock
    (a file truncated under a mapping would raise SIGBUS).
    """
    base = start - start % mmap.ALLOCATIONGRANULARITY  # mmap offsets must be page-aligned
    with mmap.mmap(fd, end - base, prot=mmap.PROT_READ, offset=base) as mapped:
        with contextlib.suppress(OSError, AttributeError):
            mapped.madvise(mmap.MADV_SEQUENTIAL)
        with memoryview(mapped) as view:
            hasher.update(view[start - base:])


def _is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


class VersionLock:
    """Exclusive flock on DIR/NAME/.VERSION.lock; flock is per open file, so it also excludes threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, timeout_s: float, *, blocking: bool = True) -> bool:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout_s
        delay, announced = 0.05, False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not blocking or time.monotonic() >= deadline:
                    os.close(self.fd)
                    self.fd = None
                    if not blocking:
                        return False
                    raise CheckFailed(f"another stager held {self.path} for more than {timeout_s:.0f} s") from None
                if not announced:
                    holder = self.path.read_text(errors="replace").strip() or "unknown"
                    log.info("waiting for another stager of this version (%s)", holder)
                    announced = True
                time.sleep(delay)  # lock poll, bounded by the deadline above
                delay = min(delay * 2, 1.0)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {socket.gethostname()} since {utc_now()}\n".encode(), 0)
        return True

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None


# -- the transfer engine ------------------------------------------------------------------


class _Retryable(Exception):
    """A stream broke mid-transfer (reset, stall, short body); resume at the byte reached."""


class _Cancelled(Exception):
    pass


def _body_reader(body: Any, resp: dict[str, Any]) -> tuple[Callable[[memoryview], int], Callable[[bool], None]]:
    """readinto() on the response socket, skipping two copies urllib3's read() would make.

    Falls back to StreamingBody.read when the internals are not what we expect or
    the body is content-encoded.
    """
    raw = getattr(body, "_raw_stream", None)
    fp = getattr(raw, "_fp", None)
    plain = resp.get("ContentEncoding") in (None, "", "identity")
    if plain and isinstance(fp, http.client.HTTPResponse) and not getattr(raw, "chunked", False):
        def finish(ok: bool) -> None:
            with contextlib.suppress(Exception):
                if not ok:
                    raw.close()  # a broken connection must not go back to the pool
                raw.release_conn()
        return fp.readinto, finish

    def readinto(mv: memoryview) -> int:
        data = body.read(len(mv))
        mv[: len(data)] = data
        return len(data)

    def close(ok: bool) -> None:
        with contextlib.suppress(Exception):
            body.close()
    return readinto, close


class _FileJob:
    """One manifest file being fetched into the partial folder, hashed in order."""

    def __init__(self, entry: ManifestEntry, path: Path, journal: Path | None, part_size: int) -> None:
        self.entry = entry
        self.path = path
        self.journal = journal
        self.part_size = part_size
        self.nparts = max(1, math.ceil(entry.size / part_size))
        self.lock = threading.Lock()
        self.fd = -1
        self.resumed = False
        self.reset(keep_journal=True)

    def reset(self, *, keep_journal: bool) -> list[int]:
        """Open (or re-open) the file; return the parts still to fetch."""
        done: set[int] = set()
        if keep_journal and self.journal is not None and self.journal.is_file() and self.path.is_file():
            done = {int(x) for x in self.journal.read_text().split() if x.isdigit() and int(x) < self.nparts}
        elif self.journal is not None:
            self.journal.unlink(missing_ok=True)
        if self.fd >= 0:
            os.close(self.fd)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | (0 if done else os.O_TRUNC), 0o644)
        os.ftruncate(self.fd, self.entry.size)  # sparse: no data written twice
        self.resumed = bool(done)
        self.done = [i in done for i in range(self.nparts)]
        self.hashing = False
        self.hash_next = 0
        self.hasher = hashlib.sha256()
        return [i for i in range(self.nparts) if not self.done[i]]

    def span(self, idx: int) -> tuple[int, int]:
        start = idx * self.part_size
        return start, min(start + self.part_size, self.entry.size)

    @property
    def journaled_bytes(self) -> int:
        return sum(self.span(i)[1] - self.span(i)[0] for i in range(self.nparts) if self.done[i])

    def record_part(self, idx: int) -> None:
        if self.journal is not None:
            fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, f"{idx}\n".encode())
            finally:
                os.close(fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Transfer:
    """A fixed pool of threads fetching parts; the first hard error cancels the rest."""

    def __init__(self, client: Any, loc: ModelLocation, cfg: StageConfig, total: int,
                 on_verified: Callable[[_FileJob], None]) -> None:
        self.client, self.loc, self.cfg = client, loc, cfg
        self.on_verified = on_verified
        self.total = total
        self.received = 0
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.idle = threading.Event()
        self.error: BaseException | None = None
        self.queue: list[tuple[_FileJob, int]] = []
        self.outstanding = 0
        self.local = threading.local()
        self.splice = cfg.splice and hasattr(os, "splice")

    # scheduling ---------------------------------------------------------------------
    def submit(self, tasks: Iterable[tuple[_FileJob, int]]) -> None:
        with self.lock:
            items = list(tasks)
            self.queue.extend(items)
            self.outstanding += len(items)
            if self.outstanding:
                self.idle.clear()

    def _next(self) -> tuple[_FileJob, int] | None:
        with self.lock:
            return self.queue.pop(0) if self.queue else None

    def _task_done(self) -> None:
        with self.lock:
            self.outstanding -= 1
            if self.outstanding == 0:
                self.idle.set()

    def _fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
        self.cancel.set()

    def run(self, progress: Callable[[int], None]) -> None:
        if self.outstanding == 0:
            return
        threads = [threading.Thread(target=self._worker, name=f"stage-{i}", daemon=True)
                   for i in range(min(self.cfg.concurrency, self.outstanding))]
        for t in threads:
            t.start()
        try:
            while not self.idle.wait(self.cfg.progress_interval_s):
                progress(self.received)
        except BaseException as exc:  # Ctrl-C: stop the workers, keep what is verified
            self._fail(exc)
            raise
        finally:
            self.cancel.set()
            for t in threads:
                t.join()
        if self.error is not None:
            raise self.error

    def _worker(self) -> None:
        buf = bytearray(self.cfg.buffer_size)
        self.local.mv = memoryview(buf)
        while True:
            # Workers exit once the queue is empty; a resumed file that must be refetched
            # re-queues its parts from inside a worker, which then picks them up itself.
            item = self._next()
            if item is None:
                self._drop_pipe()
                return
            job, idx = item
            try:
                if not self.cancel.is_set():
                    self._fetch_part(job, idx)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self._fail(exc)
            finally:
                self._task_done()

    # one part -------------------------------------------------------------------------
    def _fetch_part(self, job: _FileJob, idx: int) -> None:
        start, end = job.span(idx)
        # Without splice a one-part file is hashed as it passes through our buffer; with
        # splice the bytes never reach user space, so every file is hashed by read-back.
        inline = job.nparts == 1 and not self.splice
        pos, attempt = start, 0
        while True:
            try:
                pos = self._stream(job, start, pos, end, inline)
                break
            except _Retryable as exc:
                pos = exc.args[1]
                attempt += 1
                if attempt >= self.cfg.part_attempts:
                    raise CheckFailed(f"{self.loc.url_of(job.entry.path)}: download failed after {attempt} "
                                      f"attempts ({exc.args[0]}); nothing published") from None
                delay = min(self.cfg.backoff_cap_s, self.cfg.backoff_base_s * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                log.warning("%s: %s at byte %d; retry %d/%d in %.1f s", job.entry.path, exc.args[0], pos,
                            attempt, self.cfg.part_attempts - 1, delay)
                if self.cancel.wait(delay):  # backoff that still wakes at once on cancel
                    raise _Cancelled() from None
        if inline:
            self._finish(job)
        else:
            job.record_part(idx)
            self._advance_hash(job, idx)

    def _stream(self, job: _FileJob, first: int, pos: int, end: int, inline: bool) -> int:
        from botocore.exceptions import BotoCoreError, ClientError
        from urllib3.exceptions import HTTPError  # the fallback reader's stream errors

        url = self.loc.url_of(job.entry.path)
        ranged = not (pos == 0 and end == job.entry.size)  # a whole file is one plain GET
        kwargs: dict[str, Any] = {"Bucket": self.loc.bucket, "Key": self.loc.key(job.entry.path)}
        if ranged:
            if end <= pos:
                return pos
            kwargs["Range"] = f"bytes={pos}-{end - 1}"
        try:
            resp = self.client.get_object(**kwargs)
        except ClientError as exc:
            if error_code(exc) == "InvalidRange" or http_status(exc) == 416:
                raise CheckFailed(f"{url}: size mismatch (manifest says {job.entry.size} bytes; the object "
                                  "is shorter); nothing published") from None
            raise translate(exc, url) from None
        except BotoCoreError as exc:
            if "timeout" in type(exc).__name__.lower() or "Connection" in type(exc).__name__:
                raise _Retryable(f"{type(exc).__name__}", pos) from None
            raise translate(exc, url) from None
        total = resp.get("ContentLength", -1)
        if ranged:
            content_range = str(resp.get("ContentRange", ""))
            total = int(content_range.rsplit("/", 1)[-1]) if "/" in content_range else -1
        if total != job.entry.size or (ranged and resp.get("ContentLength") != end - pos):
            resp["Body"].close()
            raise CheckFailed(f"{url}: size mismatch (manifest {job.entry.size} bytes, object {total}); "
                              "nothing published")
        spliceable = self._spliceable(resp) if self.splice else None
        if spliceable is not None:
            return self._splice_body(job, *spliceable, pos, end)
        readinto, finish = _body_reader(resp["Body"], resp)
        mv: memoryview = self.local.mv
        ok = False
        try:
            while pos < end:
                if self.cancel.is_set():
                    raise _Cancelled()
                try:
                    n = readinto(mv[: min(len(mv), end - pos)])
                except (OSError, http.client.HTTPException, BotoCoreError, HTTPError) as exc:
                    raise _Retryable(f"{type(exc).__name__}: {exc}", pos) from None
                if not n:
                    raise _Retryable("connection closed before the body ended", pos)
                chunk = mv[:n]
                try:
                    _pwrite_all(job.fd, chunk, pos)
                except OSError as exc:
                    if _is_disk_full(exc):
                        raise DiskFull(f"disk full writing {job.path.name} ({exc.strerror}); "
                                       "nothing published") from None
                    raise
                if inline:
                    job.hasher.update(chunk)
                pos += n
                with self.lock:
                    self.received += n
            ok = True
        finally:
            finish(ok)
        return pos

    @staticmethod
    def _spliceable(resp: dict[str, Any]) -> tuple[Any, http.client.HTTPResponse, socket.socket] | None:
        """The pieces for splice, when the body is plain bytes on a plain TCP socket."""
        raw = getattr(resp["Body"], "_raw_stream", None)
        fp = getattr(raw, "_fp", None)
        sock = getattr(getattr(raw, "_connection", None), "sock", None)
        if (resp.get("ContentEncoding") not in (None, "", "identity") or getattr(raw, "chunked", False)
                or not isinstance(fp, http.client.HTTPResponse) or not isinstance(sock, socket.socket)
                or isinstance(sock, ssl.SSLSocket) or not hasattr(fp, "_close_conn")):
            return None  # TLS (AWS itself) and anything unexpected take the readinto path
        return raw, fp, sock

    def _pipe(self) -> tuple[int, int]:
        pipe = getattr(self.local, "pipe", None)
        if pipe is None:
            pipe = os.pipe()
            with contextlib.suppress(OSError):  # 1 MiB pipes: fewer syscalls; the default 64 KiB also works
                fcntl.fcntl(pipe[1], _F_SETPIPE_SZ, 1 << 20)
            self.local.pipe = pipe
        return pipe

    def _drop_pipe(self) -> None:
        pipe = getattr(self.local, "pipe", None)
        if pipe is not None:  # it may hold bytes of a broken response
            for fd in pipe:
                os.close(fd)
            self.local.pipe = None

    def _splice_body(self, job: _FileJob, raw: Any, fp: http.client.HTTPResponse, sock: socket.socket,
                     pos: int, end: int) -> int:
        """Move the body socket -> pipe -> file inside the kernel, like s5cmd's io.Copy.

        No byte is copied through Python; the file is hashed later from the page cache.
        The socket is non-blocking under Python's timeout, so we poll with the same
        read timeout: a stall ends as a retryable error at the byte reached.
        """
        ok = False
        try:
            buffered = fp.fp.read1(end - pos) if fp.fp is not None else b""  # what http.client already read
        except (OSError, http.client.HTTPException) as exc:
            raw.close()
            raise _Retryable(f"{type(exc).__name__}: {exc}", pos) from None
        try:
            if buffered:
                self._write_at(job, memoryview(buffered), pos)
                pos += len(buffered)
            timeout = sock.gettimeout()
            timeout_ms = int(timeout * 1000) if timeout is not None else -1
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            pr, pw = self._pipe()
            while pos < end:
                if self.cancel.is_set():
                    raise _Cancelled()
                try:
                    n = os.splice(sock.fileno(), pw, min(1 << 20, end - pos),
                                  flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
                except BlockingIOError:
                    if not poller.poll(timeout_ms):
                        raise _Retryable(f"no data for {timeout:.0f} s (read timeout)", pos) from None
                    continue
                except OSError as exc:
                    raise _Retryable(f"{type(exc).__name__}: {exc}", pos) from None
                if n == 0:
                    raise _Retryable("connection closed before the body ended", pos)
                while n:
                    try:
                        m = os.splice(pr, job.fd, n, offset_dst=pos, flags=os.SPLICE_F_MOVE)
                    except OSError as exc:
                        if _is_disk_full(exc):
                            raise DiskFull(f"disk full writing {job.path.name} ({exc.strerror}); "
                                           "nothing published") from None
                        raise
                    n -= m
                    pos += m
                    with self.lock:
                        self.received += m
            ok = True
        finally:
            if ok:
                fp.length = 0
                if fp.fp is not None:
                    fp._close_conn()  # the body is consumed: the connection may go back to the pool
            else:
                self._drop_pipe()
                with contextlib.suppress(Exception):
                    raw.close()
            with contextlib.suppress(Exception):
                raw.release_conn()
        return pos

    def _write_at(self, job: _FileJob, data: memoryview, pos: int) -> None:
        try:
            _pwrite_all(job.fd, data, pos)
        except OSError as exc:
            if _is_disk_full(exc):
                raise DiskFull(f"disk full writing {job.path.name} ({exc.strerror}); nothing published") from None
            raise
        with self.lock:
            self.received += len(data)

    def _advance_hash(self, job: _FileJob, idx: int) -> None:
        """Hash parts in order as they complete: whoever completes the next part hashes onward."""
        with job.lock:
            job.done[idx] = True
            if job.hashing:
                return
            job.hashing = True
        mv: memoryview = self.local.mv
        while True:
            with job.lock:
                if job.hash_next >= job.nparts or not job.done[job.hash_next]:
                    job.hashing = False
                    finished = job.hash_next >= job.nparts
                    break
                i = job.hash_next
            pos, end = job.span(i)
            if end - pos >= MiB and self.cfg.mmap_hash:
                _hash_mapped(job.hasher, job.fd, pos, end)
                pos = end
            while pos < end:  # read back from the page cache: the bytes were just written
                n = os.preadv(job.fd, [mv[: min(len(mv), end - pos)]], pos)
                if n <= 0:
                    raise CheckFailed(f"{job.path}: short read while hashing")
                job.hasher.update(mv[:n])
                pos += n
            if self.cfg.fsync:
                _start_writeback(job.fd, job.span(i)[0], end - job.span(i)[0])
            with job.lock:
                job.hash_next += 1
        if finished:
            self._finish(job)

    def _finish(self, job: _FileJob) -> None:
        digest = job.hasher.hexdigest()
        if digest != job.entry.sha256:
            if job.resumed:
                log.warning("%s: sha256 mismatch after resuming; fetching it again from scratch", job.entry.path)
                self.submit((job, i) for i in job.reset(keep_journal=False))
                return
            job.close()
            job.path.unlink(missing_ok=True)
            if job.journal is not None:
                job.journal.unlink(missing_ok=True)
            raise CheckFailed(f"{self.loc.url_of(job.entry.path)}: sha256 mismatch (manifest {job.entry.sha256[:12]}..., "
                              f"got {digest[:12]}...); file {job.entry.path} deleted, nothing published")
        if self.cfg.fsync:
            os.fsync(job.fd)
        job.close()
        self.on_verified(job)


class DiskFull(CheckFailed):
    """ENOSPC/EDQUOT while writing: the partial folder is removed to give the space back."""


# -- staging ------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_staged(folder: Path, manifest: Manifest, manifest_sha: str) -> bool:
    """The marker names this manifest and every file has its size: a cheap, complete check."""
    marker = _read_json(folder / MARKER)
    if not marker or marker.get("manifest_sha256") != manifest_sha:
        return False
    try:
        return all((folder / f.path).stat().st_size == f.size for f in manifest.files)
    except OSError:
        return False


def fetch_manifest(client: Any, loc: ModelLocation) -> tuple[Manifest, bytes]:
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

    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--dest {dest}: cannot create {model_dir} ({exc.strerror})") from None
    if not os.access(model_dir, os.W_OK):
        raise BadInput(f"--dest {dest}: {model_dir} is not writable")
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


def _stage_locked(client: Any, loc: ModelLocation, manifest: Manifest, manifest_bytes: bytes, manifest_sha: str,
                  final: Path, cfg: StageConfig, result: Callable[..., StageResult]) -> StageResult:
    partial = final.parent / f".{loc.version}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    parts_dir = partial / PARTS_DIR
    parts_dir.mkdir(exist_ok=True)
    progress_path = partial / PROGRESS
    state = _read_json(progress_path) or {}
    verified: dict[str, list[Any]] = state.get("verified", {}) if isinstance(state.get("verified"), dict) else {}

    # Keep what an earlier run verified, if the manifest still lists it unchanged.
    wanted = {f.path: f for f in manifest.files}
    kept: dict[str, list[Any]] = {}
    for rel, rec in verified.items():
        entry = wanted.get(rel)
        path = partial / rel
        if entry and rec == [entry.size, entry.sha256] and path.is_file() and path.stat().st_size == entry.size:
            kept[rel] = rec
    _remove_strays(partial, set(wanted), keep={PROGRESS, PARTS_DIR})

    jobs: list[_FileJob] = []
    for entry in sorted(manifest.files, key=lambda f: -f.size):  # big first: they bound the wall time
        if entry.path in kept:
            continue
        target = (partial / entry.path).resolve()
        if partial.resolve() not in target.parents:
            raise BadInput(f"manifest entry {entry.path!r} escapes the destination")
        journal_key = sha256_bytes(f"{entry.path}|{entry.size}|{entry.sha256}|{cfg.part_size}".encode())[:32]
        multi = entry.size > cfg.part_size
        jobs.append(_FileJob(entry, target, parts_dir / journal_key if multi else None, cfg.part_size))
    keep_journals = {j.journal.name for j in jobs if j.journal is not None}
    for stale in parts_dir.iterdir():
        if stale.name not in keep_journals:
            stale.unlink(missing_ok=True)

    need = sum(j.entry.size for j in jobs) - sum(j.journaled_bytes for j in jobs)
    free = cfg.free_bytes if cfg.free_bytes is not None else shutil.disk_usage(partial).free
    if need > free:
        for j in jobs:
            j.close()
        raise CheckFailed(f"not enough free space on {final.parent}: need {_human(need)}, {_human(free)} free; "
                          "nothing downloaded")
    if kept:
        log.info("resuming: %d verified file(s) kept, %s to fetch", len(kept), _human(need))

    state_lock = threading.Lock()

    def on_verified(job: _FileJob) -> None:
        with state_lock:
            kept[job.entry.path] = [job.entry.size, job.entry.sha256]
            try:
                write_json_atomic(progress_path, {"manifest_sha256": manifest_sha, "verified": kept})
            except OSError as exc:
                # The disk can fill between two parts; the progress file is where it shows first.
                if _is_disk_full(exc):
                    raise DiskFull(f"disk full writing the progress file ({exc.strerror}); nothing published") from None
                raise
        if job.journal is not None:
            job.journal.unlink(missing_ok=True)

    transfer = _Transfer(client, loc, cfg, need, on_verified)
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

    # Publish: marker inside, then one rename. The marker is written last and durably.
    try:
        (partial / STAGED_MANIFEST).write_bytes(manifest_bytes)
        write_json_atomic(partial / MARKER, {
            "manifest_sha256": manifest_sha, "source": loc.url, "name": loc.name, "version": loc.version,
            "files": len(manifest.files), "bytes": manifest.total_size, "staged_utc": utc_now(),
            "staged_unix_ns": time.time_ns(),  # orders versions for --keep; UTC seconds tie too often
        })
    except OSError as exc:
        if _is_disk_full(exc):
            shutil.rmtree(partial, ignore_errors=True)
            raise DiskFull(f"disk full writing the completion marker ({exc.strerror}); nothing published") from None
        raise
    os.chmod(partial / MARKER, 0o644)  # serving pods may run as another user; mkstemp made it 0600
    progress_path.unlink(missing_ok=True)
    shutil.rmtree(parts_dir, ignore_errors=True)
    if cfg.fsync:
        for d in {partial, *[(partial / f.path).parent for f in manifest.files]}:
            _fsync_dir(d)
    _move_into_place(partial, final)
    if cfg.fsync:
        _fsync_dir(final.parent)
    log.info("staged %s at %s", loc.url, final)
    return result(downloaded_bytes=transfer.received, reused_files=len(manifest.files) - len(jobs))


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
    if _exchange(partial, final):
        os.rename(partial, trash)
    else:
        os.rename(final, trash)
        os.rename(partial, final)
    shutil.rmtree(trash, ignore_errors=True)


# -- retention ----------------------------------------------------------------------------


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
        marker = _read_json(d / MARKER)
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


def main(argv: Sequence[str] | None = None) -> int:
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


if __name__ == "__main__":
    from evals._cli import exit_with

    exit_with(main)
