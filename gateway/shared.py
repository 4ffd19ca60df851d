"""State every worker process shares: the routing state and the per-key limiters.

One anonymous shared mapping, made by the supervisor before it forks the workers, and
one lock (a POSIX semaphore) guarding writes:

- the routing region: a generation counter and the state as JSON. The supervisor (admin
  API, routing file) writes it; a worker compares the counter on every request (one
  8-byte read) and re-reads the JSON when it moved, so a change reaches every worker
  on its next request, with no restart; streams in flight keep the upstream they started on.
- the limiter table: open-addressed slots keyed by the API key's hash, each a token
  bucket (requests/s) and a one-minute token window. Limits hold across workers, because
  a client's keep-alive connections land on different workers.
"""

from __future__ import annotations

import json
import mmap
import multiprocessing
import struct
from dataclasses import dataclass
from typing import Any

_GEN = struct.Struct("<QI")  # generation, JSON length
ROUTING_BYTES = 64 * 1024
_SLOT = struct.Struct("<Qdddd")  # key hash, bucket tokens, last refill, window start, window tokens
SLOTS = 4096
_PROBES = 8
_READY = struct.Struct("<Bd200s")  # ready flag, when checked (monotonic), detail
READY_OFF = ROUTING_BYTES + SLOTS * _SLOT.size
_RECENT = struct.Struct("<Q32sB")  # request-id hash, model version, arm (1 stable, 2 canary)
RECENT_OFF = READY_OFF + 256
RECENT_SLOTS = 1 << 16


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""  # "rate_limit" | "token_budget"
    retry_after_s: float = 0.0


class Shared:
    def __init__(self) -> None:
        self.mem = mmap.mmap(-1, RECENT_OFF + RECENT_SLOTS * _RECENT.size)
        self.ready_max_age_s = 10.0
        self.lock = multiprocessing.get_context("fork").Lock()

    # -- routing ---------------------------------------------------------------------
    def publish(self, doc: dict[str, Any]) -> None:
        data = json.dumps(doc, separators=(",", ":")).encode()
        if len(data) > ROUTING_BYTES - _GEN.size:
            raise ValueError("routing state too large")
        with self.lock:
            self.mem[_GEN.size:_GEN.size + len(data)] = data
            _GEN.pack_into(self.mem, 0, int(doc["generation"]) + 1, len(data))  # +1: 0 means "never written"

    def generation(self) -> int:
        return int(_GEN.unpack_from(self.mem, 0)[0])

    def read(self) -> tuple[int, dict[str, Any]]:
        with self.lock:
            gen, n = _GEN.unpack_from(self.mem, 0)
            data = bytes(self.mem[_GEN.size:_GEN.size + n])
        doc: dict[str, Any] = json.loads(data)
        return int(gen), doc

    # -- limiters ----------------------------------------------------------------------
    def _find(self, key: int) -> tuple[int, tuple[int, float, float, float, float] | None]:
        oldest, oldest_at = -1, float("inf")
        for i in range(_PROBES):
            idx = (key + i) % SLOTS
            off = ROUTING_BYTES + idx * _SLOT.size
            slot = _SLOT.unpack_from(self.mem, off)
            if slot[0] == key:
                return off, slot
            if slot[0] == 0:
                return off, None
            if slot[2] < oldest_at:
                oldest, oldest_at = off, slot[2]
        return oldest, None  # full: reuse the slot idle the longest

    def admit(self, key: int, now: float, rps: float, burst: float, budget: int) -> Verdict:
        """Take one request from ``key``'s bucket, or say why not and when to retry."""
        with self.lock:
            off, slot = self._find(key)
            cap = burst if burst > 0 else max(1.0, rps)
            if slot is None:
                tokens, last, win_start, win_tokens = cap, now, now, 0.0
            else:
                _, tokens, last, win_start, win_tokens = slot
                tokens = cap if tokens < 0 else min(cap, tokens + (now - last) * rps)  # -1: made by charge()
            if now - win_start >= 60.0:
                win_start, win_tokens = now, 0.0
            verdict = Verdict(True)
            if budget and win_tokens >= budget:
                verdict = Verdict(False, "token_budget", win_start + 60.0 - now)
            elif rps > 0 and tokens < 1.0:
                verdict = Verdict(False, "rate_limit", (1.0 - tokens) / rps)
            elif rps > 0:
                tokens -= 1.0
            _SLOT.pack_into(self.mem, off, key, tokens, now, win_start, win_tokens)
            return verdict

    def charge(self, key: int, now: float, tokens: int) -> None:
        """Count ``tokens`` (prompt + output) against ``key``'s minute window."""
        with self.lock:
            off, slot = self._find(key)
            if slot is None:
                _SLOT.pack_into(self.mem, off, key, -1.0, now, now, float(tokens))
                return
            _, bucket, last, win_start, win_tokens = slot
            if now - win_start >= 60.0:
                win_start, win_tokens = now, 0.0
            _SLOT.pack_into(self.mem, off, key, bucket, last, win_start, win_tokens + tokens)

    # -- readiness (the supervisor probes the upstreams; /readyz reads) --------------------
    def set_ready(self, ready: bool, detail: str, now: float) -> None:
        _READY.pack_into(self.mem, READY_OFF, 1 if ready else 0, now, detail.encode()[:200])

    def ready(self, now: float | None = None) -> tuple[bool, str]:
        import time

        flag, at, detail = _READY.unpack_from(self.mem, READY_OFF)
        text = detail.rstrip(b"\0").decode(errors="replace") or "no upstream check yet"
        age = (time.monotonic() if now is None else now) - at
        if flag and age > self.ready_max_age_s:
            return False, f"last upstream check {age:.0f} s ago"
        return bool(flag), text

    # -- recent requests (feedback is labelled with the version and arm that answered) -----
    @staticmethod
    def _rid_hash(rid: str) -> int:
        import hashlib

        return int.from_bytes(hashlib.blake2b(rid.encode(), digest_size=8).digest(), "big") or 1

    def remember(self, rid: str, version: str, arm: str) -> None:
        h = self._rid_hash(rid)
        _RECENT.pack_into(self.mem, RECENT_OFF + (h % RECENT_SLOTS) * _RECENT.size, h, version.encode()[:32],
                          2 if arm == "canary" else 1)

    def recall(self, rid: str) -> tuple[str, str] | None:
        h = self._rid_hash(rid)
        got, version, arm = _RECENT.unpack_from(self.mem, RECENT_OFF + (h % RECENT_SLOTS) * _RECENT.size)
        if got != h:
            return None
        return version.rstrip(b"\0").decode(errors="replace"), "canary" if arm == 2 else "stable"
