"""Shared helpers of the gateway tests: HTTP calls with deadlines, metrics reading, a switchable TCP forwarder."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    events: list[Any] = field(default_factory=list)  # SSE data payloads (JSON decoded; "[DONE]" kept as str)

    def json(self) -> Any:
        return json.loads(self.body)


def call(port: int, path: str, body: Any = None, *, method: str = "POST", headers: dict[str, str] | None = None,
         raw: bytes | None = None, timeout: float = 20.0) -> Reply:
    """One request with a hard deadline (a hung gateway fails the test, never hangs it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        payload = resp.read()
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
        if reply.headers.get("content-type", "").startswith("text/event-stream"):
            for block in payload.split(b"\n\n"):
                if block.startswith(b"data: "):
                    text = block[6:].decode()
                    reply.events.append(text if text == "[DONE]" else json.loads(text))
        return reply
    finally:
        conn.close()


def chat(port: int, content: str = "hello", *, stream: bool = True, model: str = "m", timeout: float = 20.0,
         headers: dict[str, str] | None = None, **extra: Any) -> Reply:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream, **extra}
    return call(port, "/v1/chat/completions", body, headers=headers, timeout=timeout)


def metric_sum(port: int, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = call(port, "/metrics", method="GET").body.decode()
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)  # poll interval, bounded by the deadline


class Forwarder:
    """A TCP forwarder on a fixed port that can be switched off (nothing listens: refused) and on again."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: list[socket.socket] = []  # off() cuts these too: a pooled keep-alive must not survive

    def on(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.2)
        self._sock = s
        self._thread = threading.Thread(target=self._accept, args=(s,), daemon=True)
        self._thread.start()

    def off(self) -> None:
        s, self._sock = self._sock, None
        if s is not None:
            s.close()
        if self._thread is not None:
            self._thread.join(5)
        conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, s: socket.socket) -> None:
        while self._sock is s:
            try:
                client, _ = s.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
