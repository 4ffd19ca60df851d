"""Keep-alive HTTP/1.1 connections to the upstream slots, parsed with httptools.

One ``asyncio.Protocol`` per TCP connection and one exchange at a time. The exchange's
sink gets the response head, then every body piece *as it arrives* (httptools removes
the chunked framing), then the end or a failure: there is no buffering here, so an SSE
token leaves the gateway in the same event-loop turn it arrived in.

Timeouts: connect (``connect_s``), request sent -> response head (``first_byte_s``) and
silence between body pieces (``read_s``); one timer per exchange that re-arms itself
from the last activity, instead of a timer per chunk.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol
from urllib.parse import urlsplit

import httptools


class UpstreamError(Exception):
    """The upstream failed: ``kind`` is upstream_connect | upstream_timeout | upstream_reset | upstream_protocol."""

    def __init__(self, kind: str, message: str, before_response: bool) -> None:
        super().__init__(message)
        self.kind = kind
        self.before_response = before_response


class Sink(Protocol):
    def head(self, status: int, headers: dict[bytes, bytes]) -> None: ...
    def body(self, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def done(self) -> None: ...
    def failed(self, exc: UpstreamError) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("pool", "transport", "parser", "sink", "closed", "status", "headers", "got_head", "last_io",
                 "timer", "wait_s", "_keep")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: Sink | None = None
        self.closed = False
        self.headers: dict[bytes, bytes] = {}
        self.got_head = False
        self.last_io = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.wait_s = 0.0
        self._keep = True

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.sink is not None:
            self._fail(UpstreamError("upstream_reset", "upstream closed the connection" + (f" ({exc})" if exc else ""),
                                     before_response=not self.got_head))

    def data_received(self, data: bytes) -> None:
        self.last_io = time.monotonic()
        if self.sink is None:
            self.abort()  # bytes nobody asked for: out of sync
            return
        sink = self.sink
        try:
            self.parser.feed_data(data)
            sink.flush()
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("upstream_protocol", "upstream tried to upgrade", not self.got_head))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError("upstream_protocol", f"upstream sent bad HTTP ({exc})", not self.got_head))

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- httptools callbacks -------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.got_head = True
        self.wait_s = self.pool.read_s
        self._keep = self.parser.should_keep_alive()
        if self.sink is not None:
            self.sink.head(self.parser.get_status_code(), self.headers)

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.body(body)

    def on_message_complete(self) -> None:
        sink, self.sink = self.sink, None
        self._cancel_timer()
        if not self._keep:
            self.abort()
        else:
            self.pool.release(self)
        if sink is not None:
            sink.done()

    # -- the client side -----------------------------------------------------------------
    def send(self, payload: bytes, sink: Sink) -> None:
        assert self.transport is not None and self.sink is None
        self.sink = sink
        self.headers = {}
        self.got_head = False
        self.last_io = time.monotonic()
        self.wait_s = self.pool.first_byte_s
        self.timer = asyncio.get_running_loop().call_later(self.wait_s, self._check_timeout)
        self.transport.write(payload)

    def _check_timeout(self) -> None:
        self.timer = None
        if self.sink is None:
            return
        idle = time.monotonic() - self.last_io
        if idle < self.wait_s:
            self.timer = asyncio.get_running_loop().call_later(self.wait_s - idle, self._check_timeout)
            return
        what = "no response head" if not self.got_head else "no data"
        self._fail(UpstreamError("upstream_timeout", f"upstream timeout: {what} for {self.wait_s:g} s",
                                 before_response=not self.got_head))

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _fail(self, exc: UpstreamError) -> None:
        sink, self.sink = self.sink, None
        self._cancel_timer()
        self.abort()
        if sink is not None:
            sink.failed(exc)

    def abort(self) -> None:
        """Drop the connection now (never back to the pool)."""
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort()

    def detach(self) -> None:
        """The client went away: stop telling anyone and drop the connection."""
        self.sink = None
        self._cancel_timer()
        self.abort()


class Pool:
    """Idle keep-alive connections to one upstream (``http://host:port``)."""

    def __init__(self, base_url: str, connect_s: float, first_byte_s: float, read_s: float,
                 max_idle: int = 512) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.host_header = (f"{self.host}:{self.port}" if parts.port else self.host).encode()
        self.connect_s, self.first_byte_s, self.read_s = connect_s, first_byte_s, read_s
        self.max_idle = max_idle
        self._idle: list[UpstreamConnection] = []
        self._all: set[UpstreamConnection] = set()

    async def acquire(self) -> tuple[UpstreamConnection, bool]:
        """A connection and whether it was reused (a reused one may turn out stale: retry once on a new one)."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port), self.connect_s)
        except TimeoutError:
            raise UpstreamError("upstream_connect", f"connect to {self.host}:{self.port} timed out after "
                                f"{self.connect_s:g} s", True) from None
        except OSError as exc:
            raise UpstreamError("upstream_connect", f"connect to {self.host}:{self.port} failed "
                                f"({exc.strerror or exc})", True) from None
        self._all.add(conn)
        return conn, False

    def release(self, conn: UpstreamConnection) -> None:
        if conn.closed or len(self._idle) >= self.max_idle:
            conn.abort()
        else:
            self._idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        self._all.discard(conn)

    def close(self) -> None:
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()

    def request_bytes(self, method: bytes, path: bytes, body: bytes, extra: bytes = b"") -> bytes:
        return (method + b" " + path + b" HTTP/1.1\r\nHost: " + self.host_header
                + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: keep-alive\r\n" + extra + b"\r\n" + body)
