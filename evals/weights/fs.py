"""File-system primitives of staging: atomic swaps, early writeback, positional writes,
zero-copy hashing, durable directories, the per-version lock and disk-full detection.

Linux calls (renameat2, sync_file_range) go through libc and degrade to plain POSIX
where they are missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import mmap
import os
import socket
import time
from pathlib import Path
from typing import Any

from evals.errors import CheckFailed
from evals.results import utc_now

log = logging.getLogger("tollgate.stage")


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (new names, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of DATA at OFFSET; pwrite may write less than asked."""
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


_RENAME_EXCHANGE = 2
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


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a verified range to disk now (Linux sync_file_range).

    The fsync before the marker then finds little left to flush, instead of the whole
    model at once. Best effort: a no-op where the call does not exist.
    """
    fn = getattr(_libc() or None, "sync_file_range", None)
    if fn is not None:
        fn(ctypes.c_int(fd), ctypes.c_int64(offset), ctypes.c_int64(length), ctypes.c_uint(_SYNC_FILE_RANGE_WRITE))


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the call is unavailable."""
    fn = getattr(_libc() or None, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def hash_mapped(hasher: Any, fd: int, start: int, end: int) -> None:
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


def is_disk_full(exc: OSError) -> bool:
    """Out of space or over quota: the two ways a volume says it is full."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


class DiskFull(CheckFailed):
    """ENOSPC/EDQUOT while writing: the partial folder is removed to give the space back."""


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


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from PATH, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
