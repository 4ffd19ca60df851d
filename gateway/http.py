"""The gateway's HTTP/1.1 server side: one asyncio Protocol per client connection, httptools parsing.

A request is handed to the app once it is complete (``Request``); the app answers through
the connection's small response API: :meth:`ClientConnection.respond` for a whole body,
or :meth:`start_stream` / :meth:`send_chunk` / :meth:`end_stream` for chunked SSE. Keep-alive
and pipelining (queued, answered in order) are handled here; so are the body cap (the body is
not kept past ``max_body_bytes``) and back-pressure (a slow client pauses the upstream read).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import httptools
import orjson

STATUS_TEXT = {200: b"OK", 202: b"Accepted", 204: b"No Content", 400: b"Bad Request", 401: b"Unauthorized",
               403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed", 413: b"Payload Too Large",
               429: b"Too Many Requests", 499: b"Client Closed Request", 500: b"Internal Server Error",
               502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout"}


class Request:
    __slots__ = ("method", "path", "query", "headers", "body", "too_large", "keep_alive", "received_at")

    def __init__(self) -> None:
        self.method = ""
        self.path = ""
        self.query = ""
        self.headers: dict[str, str] = {}
        self.body = b""
        self.too_large = False
        self.keep_alive = True
        self.received_at = 0.0


App = Callable[[Request, "ClientConnection"], Coroutine[Any, Any, None]]


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> bytes:
    """An OpenAI-shaped error object."""
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


class ClientConnection(asyncio.Protocol):
    def __init__(self, app: App, max_body: int) -> None:
        self.app = app
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.queue: deque[Request] = deque()
        self.busy = False
        self.cur: Request | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._size = 0
        self.streaming = False
        self._pending_head = b""
        self.on_lost: Callable[[], None] | None = None
        self.on_pause: Callable[[bool], None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_lost is not None:
            cb, self.on_lost = self.on_lost, None
            cb()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._bad("upgrades are not supported")
        except httptools.HttpParserError:
            self._bad("malformed HTTP request")

    def pause_writing(self) -> None:
        if self.on_pause is not None:
            self.on_pause(True)

    def resume_writing(self) -> None:
        if self.on_pause is not None:
            self.on_pause(False)

    # -- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.cur = Request()
        self.cur.received_at = time.perf_counter()
        self._url = b""
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.cur is not None
        self.cur.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        req = self.cur
        assert req is not None
        req.method = self.parser.get_method().decode("latin-1")
        path, _, query = self._url.decode("latin-1").partition("?")
        req.path, req.query = path, query
        req.keep_alive = self.parser.should_keep_alive()
        length = req.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            req.too_large = True  # the body is read and dropped: closing unread would reset the answer away

    def on_body(self, body: bytes) -> None:
        req = self.cur
        assert req is not None
        self._size += len(body)
        if self._size > self.max_body:
            req.too_large = True
            self._body = []
        elif not req.too_large:
            self._body.append(body)

    def on_message_complete(self) -> None:
        req = self.cur
        assert req is not None
        req.body = b"".join(self._body)
        self._body = []
        self.cur = None
        self.queue.append(req)
        if not self.busy:
            self._next()

    # -- dispatch ------------------------------------------------------------------------
    def _next(self) -> None:
        if self.closed or not self.queue:
            self.busy = False
            return
        self.busy = True
        req = self.queue.popleft()
        asyncio.get_running_loop().create_task(self._run(req))

    async def _run(self, req: Request) -> None:
        try:
            await self.app(req, self)
        except Exception:  # noqa: BLE001 - a bug must answer 500, not hang the client
            import logging

            logging.getLogger("tollgate.gateway").exception("unhandled error on %s %s", req.method, req.path)
            if not self.streaming and not self.closed:
                self.respond(req, 500, error_body("internal gateway error", "internal_error"))
            elif not self.closed:
                self.close()
        self.on_lost = self.on_pause = None
        if not req.keep_alive:
            self.close()
        self._next()

    def _bad(self, message: str) -> None:
        if self.transport is not None and not self.closed:
            body = error_body(message, "invalid_request_error", "bad_http")
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        self.close()

    # -- responses -------------------------------------------------------------------------
    def _head(self, req: Request, status: int, headers: list[tuple[bytes, bytes]], extra: bytes) -> bytes:
        parts = [b"HTTP/1.1 ", str(status).encode(), b" ", STATUS_TEXT.get(status, b"Unknown"), b"\r\n"]
        for k, v in headers:
            parts += (k, b": ", v, b"\r\n")
        if not req.keep_alive:
            parts.append(b"Connection: close\r\n")
        parts += (extra, b"\r\n")
        return b"".join(parts)

    def respond(self, req: Request, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                content_type: bytes = b"application/json") -> None:
        if self.closed or self.transport is None:
            return
        hs = [(b"Content-Type", content_type), (b"Content-Length", str(len(body)).encode()), *(headers or ())]
        self.transport.write(self._head(req, status, hs, b"") + body)

    def start_stream(self, req: Request, headers: list[tuple[bytes, bytes]]) -> None:
        if self.closed or self.transport is None:
            return
        self.streaming = True
        hs = [(b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-cache"),
              (b"Transfer-Encoding", b"chunked"), *headers]
        self._pending_head = self._head(req, 200, hs, b"")  # goes out with the first chunk: one write

    def send_chunk(self, data: bytes) -> None:
        if data and not self.closed and self.transport is not None:
            head, self._pending_head = self._pending_head, b""
            self.transport.write(head + b"%x\r\n%b\r\n" % (len(data), data))

    def end_stream(self, data: bytes = b"") -> None:
        """The last chunk (if any) and the end of the chunked body, in one write."""
        self.streaming = False
        if not self.closed and self.transport is not None:
            head, self._pending_head = self._pending_head, b""
            last = b"%x\r\n%b\r\n" % (len(data), data) if data else b""
            self.transport.write(head + last + b"0\r\n\r\n")

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()
