"""The transfer engine of staging: a pool of threads fetching ranged GETs into files.

Large files are split in parts fetched by a fixed pool of threads, each writing with
``pwrite`` at its offset (or, for plain-HTTP bodies, ``splice`` socket -> pipe -> file
inside the kernel). Each file is hashed in order while later parts still arrive
(hashlib, recv and pwrite release the GIL), so verification overlaps the transfer.
Memory is one buffer per thread. A broken stream resumes at the byte reached; the
first hard error cancels the rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import math
import os
import random
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from evals.errors import CheckFailed
from evals.weights.config import MiB, StageConfig
from evals.weights.fs import DiskFull, hash_mapped, is_disk_full, pwrite_all, start_writeback
from evals.weights.manifest import ManifestEntry
from evals.weights.s3 import ModelLocation, error_code, http_status, translate

log = logging.getLogger("tollgate.stage")

_F_SETPIPE_SZ = 1031


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
            assert raw is not None  # plain=True means urllib3 handed us its raw response
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


class FileJob:
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


class Transfer:
    """A fixed pool of threads fetching parts; the first hard error cancels the rest."""

    def __init__(self, client: Any, loc: ModelLocation, cfg: StageConfig, total: int,
                 on_verified: Callable[[FileJob], None]) -> None:
        self.client, self.loc, self.cfg = client, loc, cfg
        self.on_verified = on_verified
        self.total = total
        self.received = 0
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.idle = threading.Event()
        self.error: BaseException | None = None
        self.queue: list[tuple[FileJob, int]] = []
        self.outstanding = 0
        self.local = threading.local()
        self.splice = cfg.splice and hasattr(os, "splice")

    # scheduling ---------------------------------------------------------------------
    def submit(self, tasks: Iterable[tuple[FileJob, int]]) -> None:
        with self.lock:
            items = list(tasks)
            self.queue.extend(items)
            self.outstanding += len(items)
            if self.outstanding:
                self.idle.clear()

    def _next(self) -> tuple[FileJob, int] | None:
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
    def _fetch_part(self, job: FileJob, idx: int) -> None:
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

    def _stream(self, job: FileJob, first: int, pos: int, end: int, inline: bool) -> int:
        url = self.loc.url_of(job.entry.path)
        ranged = not (pos == 0 and end == job.entry.size)  # a whole file is one plain GET
        kwargs: dict[str, Any] = {"Bucket": self.loc.bucket, "Key": self.loc.key(job.entry.path)}
        if ranged:
            if end <= pos:
                return pos
            kwargs["Range"] = f"bytes={pos}-{end - 1}"
        resp = self._get_object(job, kwargs, url, pos)
        self._check_length(job, resp, url, ranged, pos, end)
        spliceable = self._spliceable(resp) if self.splice else None
        if spliceable is not None:
            return self._splice_body(job, *spliceable, pos, end)
        return self._read_body(job, resp, pos, end, inline)

    def _get_object(self, job: FileJob, kwargs: dict[str, Any], url: str, pos: int) -> dict[str, Any]:
        """One GET; a short object is a size mismatch, a dropped connection is retried at POS."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(**kwargs)
        except ClientError as exc:
            if error_code(exc) == "InvalidRange" or http_status(exc) == 416:
                raise CheckFailed(f"{url}: size mismatch (manifest says {job.entry.size} bytes; the object "
                                  "is shorter); nothing published") from None
            raise translate(exc, url) from None
        except BotoCoreError as exc:
            if "timeout" in type(exc).__name__.lower() or "Connection" in type(exc).__name__:
                raise _Retryable(f"{type(exc).__name__}", pos) from None
            raise translate(exc, url) from None

    @staticmethod
    def _check_length(job: FileJob, resp: dict[str, Any], url: str, ranged: bool, pos: int, end: int) -> None:
        """The object must have the manifest's size, and a ranged answer exactly the range asked."""
        total = resp.get("ContentLength", -1)
        if ranged:
            content_range = str(resp.get("ContentRange", ""))
            total = int(content_range.rsplit("/", 1)[-1]) if "/" in content_range else -1
        if total != job.entry.size or (ranged and resp.get("ContentLength") != end - pos):
            resp["Body"].close()
            raise CheckFailed(f"{url}: size mismatch (manifest {job.entry.size} bytes, object {total}); "
                              "nothing published")

    def _read_body(self, job: FileJob, resp: dict[str, Any], pos: int, end: int, inline: bool) -> int:
        """Read the body through our buffer and pwrite it at its offset; hash it on the way when INLINE."""
        from botocore.exceptions import BotoCoreError
        from urllib3.exceptions import HTTPError  # the fallback reader's stream errors

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
                self._write_at(job, chunk, pos)
                if inline:
                    job.hasher.update(chunk)
                pos += n
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

    def _splice_body(self, job: FileJob, raw: Any, fp: http.client.HTTPResponse, sock: socket.socket,
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
            pos = self._splice_from(job, sock, pos, end)
            ok = True
        finally:
            self._end_response(raw, fp, ok)
        return pos

    def _splice_from(self, job: FileJob, sock: socket.socket, pos: int, end: int) -> int:
        """Splice socket -> pipe, then drain the pipe into the file, until END."""
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
            pos = self._drain_pipe(job, pr, n, pos)
        return pos

    def _drain_pipe(self, job: FileJob, pr: int, n: int, pos: int) -> int:
        """Move the N bytes waiting in the pipe to the file at POS; returns the new position."""
        while n:
            try:
                m = os.splice(pr, job.fd, n, offset_dst=pos, flags=os.SPLICE_F_MOVE)
            except OSError as exc:
                if is_disk_full(exc):
                    raise DiskFull(f"disk full writing {job.path.name} ({exc.strerror}); "
                                   "nothing published") from None
                raise
            n -= m
            pos += m
            with self.lock:
                self.received += m
        return pos

    def _end_response(self, raw: Any, fp: http.client.HTTPResponse, ok: bool) -> None:
        """Hand a fully read connection back to the pool; close a broken one (its pipe may hold bytes)."""
        if ok:
            fp.length = 0
            if fp.fp is not None:
                fp._close_conn()  # type: ignore[attr-defined]  # the body is consumed: the connection may go back to the pool
        else:
            self._drop_pipe()
            with contextlib.suppress(Exception):
                raw.close()
        with contextlib.suppress(Exception):
            raw.release_conn()

    def _write_at(self, job: FileJob, data: memoryview, pos: int) -> None:
        try:
            pwrite_all(job.fd, data, pos)
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull(f"disk full writing {job.path.name} ({exc.strerror}); nothing published") from None
            raise
        with self.lock:
            self.received += len(data)

    def _advance_hash(self, job: FileJob, idx: int) -> None:
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
                hash_mapped(job.hasher, job.fd, pos, end)
                pos = end
            while pos < end:  # read back from the page cache: the bytes were just written
                n = os.preadv(job.fd, [mv[: min(len(mv), end - pos)]], pos)
                if n <= 0:
                    raise CheckFailed(f"{job.path}: short read while hashing")
                job.hasher.update(mv[:n])
                pos += n
            if self.cfg.fsync:
                start_writeback(job.fd, job.span(i)[0], end - job.span(i)[0])
            with job.lock:
                job.hash_next += 1
        if finished:
            self._finish(job)

    def _finish(self, job: FileJob) -> None:
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
