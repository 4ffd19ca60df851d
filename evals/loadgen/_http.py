"""A small HTTP/1.1 client for streaming requests over keep-alive connections.

Why not aiohttp or httpx: a load generator must spend less CPU per request than
the server it measures, and must timestamp bytes when they arrive, not when a
task gets scheduled after several layers of buffering. This module is one
``asyncio.Protocol`` per TCP connection: the request is one ``write``; every
``data_received`` call is stamped with ``time.perf_counter()`` and handed, with
that stamp, to a body sink (the SSE decoder). It supports exactly what an
OpenAI-compatible server speaks: ``Content-Length`` and ``chunked`` bodies,
keep-alive and ``Connection: close``, plain TCP or TLS.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from evals.errors import BadInput

_ERROR_BODY_LIMIT = 2048
_HEADER_LIMIT = 64 * 1024


class TransportError(Exception):
    """The connection failed, closed early, or sent something that is not HTTP/1.1.

    ``before_response``: not a single response byte had arrived (a stale keep-alive
    connection looks like this).
    """

    def __init__(self, message: str, before_response: bool = False) -> None:
        super().__init__(message)
        self.before_response = before_response


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: scheme, host, port and the API base path (e.g. ``/v1``)."""

    scheme: str
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str, flag: str = "--endpoint") -> Endpoint:
        """Accept ``http(s)://host[:port][/prefix]``; ``/v1`` is appended when the path has none."""
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInput(f"{flag} {url!r} is not an http(s) URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise BadInput(f"{flag} {url!r} has an invalid port") from None
        path = parts.path.rstrip("/")
        if not path.endswith("/v1"):
            path = path + "/v1"
        return cls(parts.scheme, parts.hostname, port, path)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.base_path}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


BodySink = Callable[[bytes, float], None]


class _Exchange:
    """One request/response on a connection: parses status, headers and body."""

    __slots__ = ("sink", "future", "status", "headers_done", "head", "mode", "remaining",
                 "chunk_state", "error_body", "keep_alive", "first_byte_at")

    def __init__(self, sink: BodySink, future: asyncio.Future[tuple[int, float]]) -> None:
        self.sink = sink
        self.future = future
        self.status = 0
        self.headers_done = False
        self.head = b""
        self.mode = ""  # "length" | "chunked" | "close"
        self.remaining = 0
        self.chunk_state = b""  # unparsed chunked-encoding bytes
        self.error_body = bytearray()
        self.keep_alive = True
        self.first_byte_at = 0.0


class HttpConnection(asyncio.Protocol):
    """One keep-alive TCP connection; one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.exchange: _Exchange | None = None
        self.closed = False
        self.reusable = True
        self.uses = 0  # requests sent on this connection

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        ex = self.exchange
        if ex is None:
            return
        self.exchange = None
        if ex.headers_done and ex.mode == "close":
            _resolve(ex, ex.status, time.perf_counter())
        else:
            what = "connection closed by server" if exc is None else f"connection lost ({exc})"
            _fail(ex, TransportError(what, before_response=not ex.first_byte_at))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        ex = self.exchange
        if ex is None:
            if data:  # bytes nobody asked for: the connection is out of sync; never reuse it
                self.abort()
            return
        try:
            self._feed(ex, data, now)
        except TransportError as exc:
            self.exchange = None
            self.abort()
            _fail(ex, exc)

    # -- client side -----------------------------------------------------------------
    def request(self, payload: bytes, sink: BodySink, future: asyncio.Future[tuple[int, float]]) -> None:
        """Send one complete request; ``future`` gets (HTTP status, arrival time of the last byte)."""
        assert self.transport is not None and self.exchange is None
        self.exchange = _Exchange(sink, future)
        self.uses += 1
        self.transport.write(payload)

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def fail_current(self, exc: BaseException) -> None:
        """End the exchange in progress with ``exc`` (a timeout) and drop the connection."""
        ex = self.exchange
        self.exchange = None
        self.abort()
        if ex is not None:
            _fail(ex, exc)

    # -- parsing ---------------------------------------------------------------------
    def _feed(self, ex: _Exchange, data: bytes, now: float) -> None:
        if not ex.headers_done:
            if not ex.first_byte_at:
                ex.first_byte_at = now
            ex.head += data
            end = ex.head.find(b"\r\n\r\n")
            if end < 0:
                if len(ex.head) > _HEADER_LIMIT:
                    raise TransportError("response headers too large")
                return
            data = ex.head[end + 4:]
            self._parse_head(ex, ex.head[:end])
            ex.head = b""
            if ex.mode == "length" and ex.remaining == 0:
                self._finish(ex, now)
                return
            if not data:
                return
        if ex.mode == "length":
            take = data[: ex.remaining]
            ex.remaining -= len(take)
            self._body(ex, take, now)
            if ex.remaining == 0:
                self._finish(ex, now)
        elif ex.mode == "chunked":
            self._chunked(ex, data, now)
        else:
            self._body(ex, data, now)

    def _parse_head(self, ex: _Exchange, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
            raise TransportError("response is not HTTP/1.x")
        try:
            ex.status = int(status_line[1])
        except ValueError:
            raise TransportError("response has no numeric status") from None
        length = -1
        chunked = False
        keep_alive = status_line[0] != b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise TransportError("bad Content-Length") from None
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                v = value.strip().lower()
                keep_alive = v != b"close" and (keep_alive or v == b"keep-alive")
        ex.keep_alive = keep_alive
        ex.headers_done = True
        if chunked:
            ex.mode = "chunked"
        elif length >= 0:
            ex.mode, ex.remaining = "length", length
        else:
            ex.mode, ex.keep_alive = "close", False

    def _chunked(self, ex: _Exchange, data: bytes, now: float) -> None:  # noqa: C901 - one state machine over a buffer on the hot path; split, it costs a call per chunk
        # ex.remaining > 0: inside a chunk's data; -1: the CRLF after the data; 0: a size line;
        # -2: after the zero-size chunk, waiting for the (empty) trailer section.
        buf = ex.chunk_state + data if ex.chunk_state else data
        ex.chunk_state = b""
        pos, n = 0, len(buf)
        out: list[bytes] = []
        while pos < n:
            rem = ex.remaining
            if rem > 0:
                take = buf[pos: pos + rem]
                out.append(take)
                pos += len(take)
                ex.remaining = rem - len(take) or -1
            elif rem == -1:
                if n - pos < 2:
                    break
                if buf[pos: pos + 2] != b"\r\n":
                    raise TransportError("malformed chunked encoding")
                pos += 2
                ex.remaining = 0
            elif rem == 0:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if n - pos > 1024:
                        raise TransportError("malformed chunked encoding")
                    break
                try:
                    size = int(buf[pos:eol].split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise TransportError("malformed chunked encoding") from None
                pos = eol + 2
                ex.remaining = size if size > 0 else -2
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                empty = eol == pos
                pos = eol + 2
                if not empty:
                    continue  # a trailer field; OpenAI servers send none, we ignore them
                if out:
                    self._body(ex, b"".join(out), now)
                    out = []
                self._finish(ex, now)
                return
        if pos < n:
            ex.chunk_state = buf[pos:]
        if out:
            self._body(ex, b"".join(out), now)

    def _body(self, ex: _Exchange, data: bytes, now: float) -> None:
        if not data:
            return
        if ex.status == 200:
            ex.sink(data, now)
        elif len(ex.error_body) < _ERROR_BODY_LIMIT:
            ex.error_body += data[: _ERROR_BODY_LIMIT - len(ex.error_body)]

    def _finish(self, ex: _Exchange, now: float) -> None:
        self.exchange = None
        if not ex.keep_alive:
            self.reusable = False
            self.abort()
        _resolve(ex, ex.status, now)


def _resolve(ex: _Exchange, status: int, now: float) -> None:
    # The arrival stamp travels with the status: the awaiting task may run much later.
    if not ex.future.done():
        ex.future.set_result((status, now))


def _fail(ex: _Exchange, exc: BaseException) -> None:
    if not ex.future.done():
        ex.future.set_exception(exc)


class ConnectionPool:
    """Idle keep-alive connections to one endpoint; a new one is opened when none is idle."""

    def __init__(self, endpoint: Endpoint, connect_timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[HttpConnection] = []
        self._all: set[HttpConnection] = set()
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if endpoint.scheme == "https" else None
        self.opened = 0

    async def acquire(self) -> HttpConnection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
            self._all.discard(conn)
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(HttpConnection, self.endpoint.host, self.endpoint.port, ssl=self._ssl),
                self.connect_timeout_s,
            )
        except TimeoutError:
            raise TransportError("connect timeout") from None
        except OSError as exc:
            raise TransportError(f"connect failed ({exc.strerror or exc})") from None
        self.opened += 1
        self._all.add(conn)
        return conn

    def release(self, conn: HttpConnection) -> None:
        if conn.reusable and not conn.closed and conn.exchange is None:
            self._idle.append(conn)
        else:
            conn.abort()
            self._all.discard(conn)

    def close(self) -> None:
        for conn in list(self._all):
            conn.abort()
        self._all.clear()
        self._idle.clear()


def build_post(endpoint: Endpoint, path: str, body: bytes, extra_headers: dict[str, str] | None = None) -> bytes:
    """The full bytes of a keep-alive POST with a JSON body, built once per prompt."""
    lines = [
        f"POST {endpoint.base_path}{path} HTTP/1.1",
        f"Host: {endpoint.host_header}",
        "User-Agent: tollgate-benchmark",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
    ]
    for k, v in (extra_headers or {}).items():
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
