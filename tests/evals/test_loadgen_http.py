"""The HTTP/1.1 response parser of the load generator, fed bytes the way a socket would."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evals.errors import BadInput
from evals.loadgen import Endpoint, TransportError, build_post
from evals.loadgen._http import HttpConnection


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True


def exchange(pieces: list[bytes]) -> tuple[object, bytes, HttpConnection]:
    """Feed response pieces to a connection; return (future outcome, body the sink saw, connection)."""
    loop = asyncio.new_event_loop()
    try:
        conn = HttpConnection()
        conn.connection_made(FakeTransport())
        fut = loop.create_future()
        seen: list[bytes] = []
        conn.request(b"POST / HTTP/1.1\r\n\r\n", lambda data, now: seen.append(data), fut)
        for piece in pieces:
            conn.data_received(piece)
        outcome: object = None
        if fut.done():
            outcome = fut.exception() or fut.result()
        return outcome, b"".join(seen), conn
    finally:
        loop.close()


def chunked_response(body_parts: list[bytes], headers: bytes = b"") -> bytes:
    out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n" + headers + b"\r\n"
    for part in body_parts:
        out += b"%x\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n\r\n"


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(parts=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=30))
def test_chunked_body_survives_any_split(parts, cuts):
    outcome, body, conn = exchange(split(chunked_response(parts), cuts))
    assert isinstance(outcome, tuple) and outcome[0] == 200
    assert body == b"".join(parts)
    assert conn.reusable and conn.exchange is None


def test_content_length_body_and_keep_alive():
    outcome, body, conn = exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", b"lo"])
    assert outcome[0] == 200 and body == b"hello" and conn.reusable  # type: ignore[index]


def test_connection_close_header_drops_the_connection_after_the_response():
    outcome, _, conn = exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"])
    assert outcome[0] == 200 and not conn.reusable  # type: ignore[index]


def test_error_status_body_is_kept_out_of_the_sink():
    outcome, body, conn = exchange([b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 7\r\n\r\n{\"e\":1}"])
    assert outcome[0] == 500 and body == b"" and conn.reusable  # type: ignore[index]


@pytest.mark.parametrize("garbage", [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n",
                                     b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"])
def test_garbage_is_a_transport_error_and_the_connection_is_dropped(garbage):
    outcome, _, conn = exchange([garbage])
    assert isinstance(outcome, TransportError)
    assert not conn.reusable


def test_server_closing_mid_body_fails_the_exchange():
    loop = asyncio.new_event_loop()
    try:
        conn = HttpConnection()
        conn.connection_made(FakeTransport())
        fut = loop.create_future()
        conn.request(b"x", lambda d, t: None, fut)
        conn.data_received(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel")
        assert not fut.done()
        conn.connection_lost(None)
        assert isinstance(fut.exception(), TransportError)
        assert "closed by server" in str(fut.exception())
    finally:
        loop.close()


def test_unsolicited_bytes_drop_the_connection():
    conn = HttpConnection()
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport.aborted and not conn.reusable


@pytest.mark.parametrize(
    ("url", "host", "port", "base"),
    [
        ("http://127.0.0.1:8010", "127.0.0.1", 8010, "/v1"),
        ("http://127.0.0.1:8010/v1/", "127.0.0.1", 8010, "/v1"),
        ("https://api.example.com/openai", "api.example.com", 443, "/openai/v1"),
        ("http://[::1]:9000/v1", "::1", 9000, "/v1"),
    ],
)
def test_endpoint_parse(url, host, port, base):
    ep = Endpoint.parse(url)
    assert (ep.host, ep.port, ep.base_path) == (host, port, base)


@pytest.mark.parametrize("url", ["127.0.0.1:8010", "ftp://x/v1", "http://:80", "http://h:99999"])
def test_endpoint_parse_rejects_non_http_urls(url):
    with pytest.raises(BadInput, match="--endpoint"):
        Endpoint.parse(url)


def test_build_post_is_a_complete_keep_alive_request():
    ep = Endpoint.parse("http://127.0.0.1:8010")
    raw = build_post(ep, "/chat/completions", b'{"a":1}', {"Authorization": "Bearer k"})
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert b"Host: 127.0.0.1:8010" in lines and b"Content-Length: 7" in lines
    assert b"Authorization: Bearer k" in lines and body == b'{"a":1}'
