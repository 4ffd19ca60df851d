"""One request's timeline, filled in by the SSE stream as bytes arrive.

Times are ``time.perf_counter()`` seconds (monotonic). ``scheduled_at`` is when
the load shape wanted the request to start, ``sent_at`` when the client actually
sent it: the difference is time queued in the client, never server latency.
"""

from __future__ import annotations

import json

try:  # ~3x faster than json.loads on small chunks; in the lock, optional in a pod
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads  # type: ignore[assignment]  # same call shape for the bytes we pass

OK = "ok"
ERROR = "error"
TIMEOUT = "timeout"


class RequestRecord:
    """Timeline and outcome of one streaming completion request.

    ``feed(data, now)`` is the body sink of the HTTP connection: it decodes
    Server-Sent Events, stamps every chunk that carries generated text (a token
    chunk), and reads the ``usage`` block that ``stream_options.include_usage``
    asks for.
    """

    __slots__ = ("index", "warmup", "scheduled_at", "sent_at", "first_token_at", "end_at", "token_times",
                 "usage_output_tokens", "prompt_tokens", "status", "reason", "done", "_buf", "finish_reason")

    def __init__(self, index: int, scheduled_at: float, warmup: bool = False) -> None:
        self.index = index
        self.warmup = warmup
        self.scheduled_at = scheduled_at
        self.sent_at = 0.0
        self.first_token_at = 0.0
        self.end_at = 0.0
        self.token_times: list[float] = []
        self.usage_output_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.status = ""
        self.reason = ""
        self.done = False  # saw `data: [DONE]`
        self.finish_reason: str | None = None
        self._buf = b""

    # -- outcome -----------------------------------------------------------------------
    @property
    def output_tokens(self) -> int:
        """Tokens generated: the server's usage count, else the number of token chunks."""
        if self.usage_output_tokens is not None:
            return self.usage_output_tokens
        return len(self.token_times)

    def fail(self, status: str, reason: str) -> None:
        # The first failure wins: a malformed event followed by a close stays "malformed".
        if self.status in ("", OK):
            self.status, self.reason = status, reason

    @property
    def ok(self) -> bool:
        return self.status == OK

    # -- derived timings (seconds) -------------------------------------------------------
    @property
    def queue_s(self) -> float:
        return max(0.0, self.sent_at - self.scheduled_at)

    @property
    def e2e_s(self) -> float:
        return self.end_at - self.sent_at

    @property
    def ttft_s(self) -> float | None:
        return self.first_token_at - self.sent_at if self.first_token_at else None

    @property
    def tpot_s(self) -> float | None:
        """TPOT = (E2E - TTFT) / (output_tokens - 1); undefined for fewer than 2 tokens."""
        n = self.output_tokens
        if n < 2 or not self.first_token_at:
            return None
        return (self.end_at - self.first_token_at) / (n - 1)

    def itl_s(self) -> list[float]:
        """Gaps between consecutive token chunks (one per chunk, as vLLM's bench does)."""
        t = self.token_times
        return [t[i] - t[i - 1] for i in range(1, len(t))]

    # -- SSE decoding --------------------------------------------------------------------
    def feed(self, data: bytes, now: float) -> None:
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        if b"\n\n" not in buf:
            self._buf = buf
            return
        *events, rest = buf.split(b"\n\n")
        self._buf = rest
        for event in events:
            self._event(event, now)

    def _event(self, event: bytes, now: float) -> None:  # noqa: C901 - the SSE event grammar in one place, on the hot path
        payload = None
        if event.startswith(b"data: ") and b"\n" not in event:
            payload = event[6:]  # the common case: one data line
        else:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    value = line[6:] if line[5:6] == b" " else line[5:]
                    payload = value if payload is None else payload + b"\n" + value
        if payload is None:
            return  # comment (keep-alive ping) or a field we do not use
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            obj = _loads(payload)
        except ValueError:
            self.fail(ERROR, "malformed SSE event (not JSON)")
            return
        if not isinstance(obj, dict):
            self.fail(ERROR, "malformed SSE event (not an object)")
            return
        if "error" in obj and obj["error"]:
            err = obj["error"]
            msg = err.get("message", "") if isinstance(err, dict) else str(err)
            self.fail(ERROR, f"server error in stream: {str(msg)[:80]}")
            return
        choices = obj.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            text = (delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")) \
                if delta else choice.get("text")
            if text:
                if not self.first_token_at:
                    self.first_token_at = now
                self.token_times.append(now)
            fr = choice.get("finish_reason")
            if fr:
                self.finish_reason = fr
        usage = obj.get("usage")
        if usage:
            ct = usage.get("completion_tokens")
            if isinstance(ct, int):
                self.usage_output_tokens = ct
            pt = usage.get("prompt_tokens")
            if isinstance(pt, int):
                self.prompt_tokens = pt

    def complete(self, now: float) -> None:
        """The HTTP body ended cleanly; decide whether the stream itself was whole."""
        self.end_at = now
        if self.status:
            return
        if self._buf.strip():
            self._event(self._buf.strip(), now)
            self._buf = b""
        if self.status:
            return
        if not self.done:
            self.fail(ERROR, "stream ended without [DONE]")
        elif not self.first_token_at and self.output_tokens == 0 and self.finish_reason is None:
            self.fail(ERROR, "stream had no tokens")
        else:
            self.status = OK

    def as_sample(self, t0: float) -> dict[str, object]:
        """A per-request row for the results file (milliseconds, offsets from the run start)."""
        ttft = self.ttft_s
        tpot = self.tpot_s
        return {
            "id": self.index,
            "warmup": self.warmup,
            "scheduled_ms": round((self.scheduled_at - t0) * 1e3, 3),
            "queue_ms": round(self.queue_s * 1e3, 3),
            "ttft_ms": None if ttft is None else round(ttft * 1e3, 3),
            "tpot_ms": None if tpot is None else round(tpot * 1e3, 3),
            "e2e_ms": round(self.e2e_s * 1e3, 3) if self.end_at else None,
            "output_tokens": self.output_tokens,
            "prompt_tokens": self.prompt_tokens,
            "status": self.status,
            "error": self.reason or None,
        }
