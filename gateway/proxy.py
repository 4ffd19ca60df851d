"""One worker's request handling: validate, limit, route, forward (streaming as it arrives), account.

The flow of ``POST /v1/chat/completions`` and ``/v1/completions``:

1. size cap, JSON, model, ``max_tokens`` cap -> 400/404 with an OpenAI error body;
2. per-key limits (``Authorization: Bearer`` key, shared across workers) -> 429 + ``Retry-After``;
3. the arm: sticky by the ``user`` field or ``X-User-Id``, else by the request id;
4. the upstream request: ``model`` set to the slot's served name, ``stream_options.include_usage``
   added to streams (the usage chunk is dropped again when the client did not ask for it);
5. forwarding: every complete SSE event of an upstream body piece is written to the client in the
   same event-loop turn; the text, finish reason and usage are read on the way;
6. a canary that fails before its first byte is retried on stable (``llm_fallback_total``);
   an upstream failing mid-stream ends the client's stream with an error event (never a hang);
7. metrics, the token charge and one request-log row.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import math
import os
import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway import metrics as m
from gateway.config import GatewayConfig, Slot
from gateway.http import ClientConnection, Request, error_body
from gateway.reqlog import Spooler
from gateway.routing import RoutingState, assign, state_from_doc, user_digest
from gateway.safety import Safety
from gateway.shared import Shared
from gateway.upstream import Pool, UpstreamConnection, UpstreamError

log = logging.getLogger("tollgate.gateway")

COMPLETION_PATHS = {"/v1/chat/completions": "chat", "/v1/completions": "text"}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_THUMBS = {"up": 1.0, "thumbs_up": 1.0, "good": 1.0, "positive": 1.0, "down": 0.0, "thumbs_down": 0.0,
           "bad": 0.0, "negative": 0.0}


# os.urandom costs a syscall per call (about 1 ms under some sandboxes): one random prefix per
# process, then a counter, keeps ids unique across workers and restarts at no cost per request.
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


def reseed_request_ids() -> None:
    """In a forked worker: a prefix of its own."""
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(6).hex()


class Rejected(Exception):
    def __init__(self, status: int, message: str, kind: str, code: str, param: str | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.param = status, kind, code, param
        self.headers = headers or []


def _prompt_text(kind: str, body: dict[str, Any]) -> str:
    if kind == "text":
        p = body.get("prompt")
        return p if isinstance(p, str) else "\n".join(map(str, p)) if isinstance(p, list) else ""
    parts = []
    for msg in body.get("messages") or []:
        if isinstance(msg, dict):
            content = msg.get("content")
            if isinstance(content, list):  # content parts
                content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
            parts.append(f"{msg.get('role', '')}: {content or ''}")
    return "\n".join(parts)


def _key_hash(headers: dict[str, str]) -> int:
    auth = headers.get("authorization", "")
    key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") or 1


class Exchange:
    """One upstream attempt's state: the sink the upstream connection feeds."""

    __slots__ = ("gw", "req", "conn", "client", "kind", "stream", "client_usage", "future", "status", "started",
                 "buf", "text", "usage", "finish", "first_token_at", "err_body", "headers", "upstream",
                 "failure", "broken", "out")

    def __init__(self, gw: Gateway, req: Request, client: ClientConnection, kind: str, stream: bool,
                 client_usage: bool, headers: list[tuple[bytes, bytes]]) -> None:
        self.gw, self.req, self.client = gw, req, client
        self.kind, self.stream, self.client_usage = kind, stream, client_usage
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.status = 0
        self.started = False  # response head sent to the client
        self.buf = b""
        self.text: list[str] = []
        self.usage: dict[str, Any] | None = None
        self.finish: str | None = None
        self.first_token_at = 0.0
        self.err_body: list[bytes] = []
        self.headers = headers
        self.upstream: UpstreamConnection | None = None
        self.failure: UpstreamError | None = None
        self.broken = False  # the upstream failed after the client got the head
        self.out: list[bytes] = []  # events parsed in this read, written by flush() at its end

    # -- the upstream's sink -------------------------------------------------------------
    def head(self, status: int, headers: dict[bytes, bytes]) -> None:
        self.status = status
        if status == 200 and self.stream:
            self.started = True
            self.client.start_stream(self.req, self.headers)

    def body(self, data: bytes) -> None:
        if not self.started:
            self.err_body.append(data)
            return
        buf = self.buf + data if self.buf else data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.buf = buf
            return
        events, self.buf = buf[:end + 2], buf[end + 2:]
        out = self._events(events)
        if out:
            self.out.append(out)

    def flush(self) -> None:
        """End of one upstream read: everything it carried goes out in one write (one syscall)."""
        if self.out:
            data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
            self.out = []
            self.client.send_chunk(data)

    def _events(self, events: bytes) -> bytes:
        """Read the complete events (text, usage, finish); return what goes to the client."""
        keep: list[bytes] = []
        for ev in events.split(b"\n\n"):
            if not ev:
                continue
            if ev.startswith(b"data: ") and ev[6:] != b"[DONE]":
                try:
                    obj = orjson.loads(ev[6:])
                except orjson.JSONDecodeError:
                    keep.append(ev)
                    continue
                if self._read_chunk(obj):
                    continue
            keep.append(ev)
        return b"\n\n".join(keep) + b"\n\n" if keep else b""

    def _read_chunk(self, obj: Any) -> bool:
        """Take text, finish reason and usage from one chunk; True when the chunk is to be dropped."""
        if not isinstance(obj, dict):
            return False
        choices = obj.get("choices") or ()
        for c in choices:
            piece = (c.get("delta") or {}).get("content") if self.kind == "chat" else c.get("text")
            if piece:
                if not self.first_token_at:
                    self.first_token_at = time.perf_counter()
                self.text.append(piece)
            if c.get("finish_reason"):
                self.finish = c["finish_reason"]
        usage = obj.get("usage")
        if usage:
            self.usage = usage
            return not choices and not self.client_usage
        return False

    def done(self) -> None:
        if self.started:
            if self.buf:
                self.out.append(self._events(self.buf + b"\n\n"))
                self.buf = b""
            out, self.out = b"".join(self.out), []
            self.client.end_stream(out)
        if not self.future.done():
            self.future.set_result(None)

    def failed(self, exc: UpstreamError) -> None:
        self.failure = exc
        if self.started:
            self.flush()
            self.broken = True
            msg = orjson.dumps({"error": {"message": f"{exc} (the stream is incomplete)", "type": "upstream_error",
                                          "code": exc.kind}})
            self.client.end_stream(b"data: " + msg + b"\n\n")
            self.req.keep_alive = False
        if not self.future.done():
            self.future.set_result(None)

    def client_gone(self) -> None:
        if self.upstream is not None:
            self.upstream.detach()
        self.failure = UpstreamError("client_closed", "the client closed the connection", not self.started)
        if not self.future.done():
            self.future.set_result(None)

    def pause(self, paused: bool) -> None:
        if self.upstream is not None:
            (self.upstream.pause if paused else self.upstream.resume)()


class Gateway:
    """The app of one worker process."""

    def __init__(self, cfg: GatewayConfig, shared: Shared, safety: Safety, spooler: Spooler | None) -> None:
        self.cfg = cfg
        self.shared = shared
        self.safety = safety
        self.spooler = spooler
        self.pools: dict[str, Pool] = {}
        self._gen = -1
        self.state = RoutingState.from_config(cfg)
        self.draining = False
        self.in_flight = 0

    # -- routing state -------------------------------------------------------------------
    def routing(self) -> RoutingState:
        gen = self.shared.generation()
        if gen != self._gen:
            gen, doc = self.shared.read()
            self._gen = gen
            if doc:
                self.state = state_from_doc(doc, "shared routing state", self.cfg.model, int(doc["generation"]))
        return self.state

    def pool(self, slot: Slot) -> Pool:
        p = self.pools.get(slot.url)
        if p is None:
            t = self.cfg.timeouts
            p = self.pools[slot.url] = Pool(slot.url, t.connect_s, t.first_byte_s, t.read_s)
        return p

    # -- the app ---------------------------------------------------------------------------
    async def __call__(self, req: Request, client: ClientConnection) -> None:
        self.in_flight += 1
        try:
            await self._route(req, client)
        finally:
            self.in_flight -= 1

    async def _route(self, req: Request, client: ClientConnection) -> None:
        kind = COMPLETION_PATHS.get(req.path)
        if kind is not None and req.method == "POST":
            await self.completion(req, client, kind)
        elif req.path == "/v1/feedback" and req.method == "POST":
            self.feedback(req, client)
        elif req.path == "/healthz":
            client.respond(req, 200, b'{"status":"ok"}')
        elif req.path == "/readyz":
            ready, why = self.shared.ready()
            client.respond(req, 200 if ready and not self.draining else 503,
                           orjson.dumps({"ready": ready and not self.draining, "detail": why}))
        elif req.path == "/metrics" and req.method == "GET":
            body = await asyncio.get_running_loop().run_in_executor(None, m.exposition)
            client.respond(req, 200, body, content_type=b"text/plain; version=0.0.4; charset=utf-8")
        elif req.path == "/v1/models" and req.method == "GET":
            client.respond(req, 200, orjson.dumps({"object": "list", "data": [
                {"id": name, "object": "model", "owned_by": "tollgate"} for name in sorted(self.cfg.accepted_models)]}))
        else:
            client.respond(req, 404, error_body(f"no route {req.method} {req.path}", "invalid_request_error",
                                                "not_found"))

    def _parse(self, req: Request) -> dict[str, Any]:
        if req.too_large:
            raise Rejected(400, f"request body larger than the gateway's limit of {self.cfg.limits.max_body_bytes} "
                           "bytes (limits.max_body_bytes)", "invalid_request_error", "request_too_large")
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError as exc:
            raise Rejected(400, f"request body is not valid JSON ({exc})", "invalid_request_error",
                           "invalid_json") from None
        if not isinstance(body, dict):
            raise Rejected(400, "request body must be a JSON object", "invalid_request_error", "invalid_json")
        model = body.get("model")
        if model not in self.cfg.accepted_models:
            raise Rejected(404, f"The model {model!r} does not exist (this gateway serves "
                           f"{', '.join(sorted(self.cfg.accepted_models))})", "invalid_request_error",
                           "model_not_found", "model")
        for field in ("max_tokens", "max_completion_tokens"):
            value = body.get(field)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise Rejected(400, f"{field} must be a positive integer", "invalid_request_error",
                               "invalid_value", field)
            if value > self.cfg.limits.max_tokens:
                raise Rejected(400, f"{field} {value} is above this gateway's cap of {self.cfg.limits.max_tokens} "
                               "(limits.max_tokens)", "invalid_request_error", "max_tokens_too_large", field)
        return body

    def _admit(self, req: Request) -> int:
        lim = self.cfg.limits
        key = _key_hash(req.headers)
        if lim.rate_limit_rps or lim.token_budget_per_min:
            v = self.shared.admit(key, time.monotonic(), lim.rate_limit_rps, lim.rate_limit_burst,
                                  lim.token_budget_per_min)
            if not v.ok:
                retry = max(1, math.ceil(v.retry_after_s))
                what = (f"rate limit of {lim.rate_limit_rps:g} requests/s" if v.reason == "rate_limit"
                        else f"token budget of {lim.token_budget_per_min} tokens/min")
                raise Rejected(429, f"{what} for this API key exceeded; retry after {retry} s", "rate_limit_error",
                               v.reason, headers=[(b"Retry-After", str(retry).encode())])
        return key

    def _reject(self, req: Request, client: ClientConnection, rid: str, exc: Rejected) -> None:
        headers = [(b"X-Request-Id", rid.encode()), *exc.headers]
        client.respond(req, exc.status, error_body(str(exc), exc.kind, exc.code, exc.param), headers)
        am = m.arm_metrics(self.cfg.model, "none", "none")
        am.status(exc.status).inc()
        self._log_row({"kind": "request", "request_id": rid, "model": self.cfg.model, "endpoint": req.path,
                       "status": exc.status, "error_type": exc.code, "duration_s": time.perf_counter()
                       - req.received_at, "stream": None})

    async def completion(self, req: Request, client: ClientConnection, kind: str) -> None:
        rid = req.headers.get("x-request-id", "")
        if not _REQUEST_ID.fullmatch(rid):
            rid = new_request_id()
        try:
            body = self._parse(req)
            key = self._admit(req)
        except Rejected as exc:
            self._reject(req, client, rid, exc)
            return
        state = self.routing()
        user = body.get("user") or req.headers.get("x-user-id") or ""
        digest = user_digest(state.model, str(user) if user else rid)
        arm = assign(state, digest)
        stream = bool(body.get("stream"))
        client_usage = False
        if stream:
            raw_opts = body.get("stream_options")
            opts: dict[str, Any] = raw_opts if isinstance(raw_opts, dict) else {}
            client_usage = bool(opts.get("include_usage"))
            body["stream_options"] = {**opts, "include_usage": True}
        meta = body.pop("metadata", None)
        meta = meta if isinstance(meta, dict) else {}
        ex, used_arm, fallback = await self._forward(req, client, kind, body, state, arm, rid, stream, client_usage)
        self._account(req, kind, body, ex, state, used_arm, fallback, rid, key, digest if user else None, meta)

    async def _forward(self, req: Request, client: ClientConnection, kind: str, body: dict[str, Any],
                       state: RoutingState, arm: str, rid: str, stream: bool,
                       client_usage: bool) -> tuple[Exchange, str, bool]:
        fallback = False
        while True:
            slot = state.slot(arm)
            am = m.arm_metrics(self.cfg.model, slot.version, arm)
            headers = [(b"X-Tollgate-Arm", arm.encode()), (b"X-Tollgate-Model-Version", slot.version.encode()),
                       (b"X-Request-Id", rid.encode())]
            ex = Exchange(self, req, client, kind, stream, client_usage, headers)
            body["model"] = slot.served_model or self.cfg.model
            am.in_flight.inc()
            try:
                await self._attempt(ex, slot, orjson.dumps(body), client)
            finally:
                am.in_flight.dec()
            failed_early = ex.failure is not None and not ex.started and ex.failure.kind != "client_closed"
            if arm == "canary" and (failed_early or (not ex.started and ex.status >= 500)):
                am.fallback.inc()
                am.error(ex.failure.kind if ex.failure else "upstream_5xx").inc()
                arm, fallback = "stable", True
                continue
            return ex, arm, fallback

    async def _attempt(self, ex: Exchange, slot: Slot, payload: bytes, client: ClientConnection) -> None:
        pool = self.pool(slot)
        data = pool.request_bytes(b"POST", ex.req.path.encode(), payload)
        for attempt in range(2):
            try:
                conn, reused = await pool.acquire()
            except UpstreamError as exc:
                ex.failure = exc
                return
            ex.upstream = conn
            ex.failure = None
            client.on_lost = ex.client_gone
            client.on_pause = ex.pause
            conn.send(data, ex)
            await ex.future
            stale = (reused and attempt == 0 and ex.failure is not None and ex.failure.before_response
                     and ex.failure.kind == "upstream_reset")
            if not stale:
                return
            ex.future = asyncio.get_running_loop().create_future()  # a keep-alive connection the upstream closed

    def _finish_response(self, ex: Exchange) -> int:
        """Answer what the stream did not: errors and whole bodies. Returns the status for metrics/log."""
        req, client = ex.req, ex.client
        if ex.failure is not None and ex.failure.kind == "client_closed":
            return 499
        if ex.started:
            return 502 if ex.broken else 200
        if ex.failure is not None:
            status = 504 if ex.failure.kind == "upstream_timeout" else 502
            client.respond(req, status, error_body(str(ex.failure), "upstream_error", ex.failure.kind), ex.headers)
            return status
        raw = b"".join(ex.err_body)
        if ex.status == 200:
            try:
                obj = orjson.loads(raw)
                ex.usage = obj.get("usage") or None
                for c in obj.get("choices") or ():
                    ex.text.append(((c.get("message") or {}).get("content") if ex.kind == "chat" else c.get("text"))
                                   or "")
                    ex.finish = c.get("finish_reason") or ex.finish
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                pass
        client.respond(req, ex.status, raw, ex.headers)
        return ex.status

    def _account(self, req: Request, kind: str, body: dict[str, Any], ex: Exchange, state: RoutingState, arm: str,
                 fallback: bool, rid: str, key: int, digest: bytes | None, meta: dict[str, Any]) -> None:
        status = self._finish_response(ex)
        now = time.perf_counter()
        slot = state.slot(arm)
        am = m.arm_metrics(self.cfg.model, slot.version, arm)
        am.status(status).inc()
        duration = now - req.received_at
        am.duration.observe(duration)
        ttft = ex.first_token_at - req.received_at if ex.first_token_at else None
        if ttft is None and status == 200 and not ex.stream:
            ttft = duration  # a whole body: its first token arrives with its last
        if ttft is not None:
            am.ttft.observe(ttft)
        error_type = None
        if ex.failure is not None:
            error_type = ex.failure.kind
            if error_type != "client_closed":
                am.error(error_type).inc()
        elif status >= 500:
            error_type = "upstream_5xx"
            am.error(error_type).inc()
        elif status >= 400:
            error_type = f"upstream_{status}"
        output = "".join(ex.text)
        prompt = _prompt_text(kind, body)
        usage = ex.usage or {}
        p_tok = int(usage.get("prompt_tokens") or 0) or (max(1, len(prompt) // 4) if status == 200 else 0)
        o_tok = int(usage.get("completion_tokens") or 0) or (len(ex.text) if ex.stream else len(output) // 4)
        if status == 200:
            am.tok_in.inc(p_tok)
            am.tok_out.inc(o_tok)
            am.generated.inc(o_tok)
            price = self.cfg.price(slot.version)
            am.cost.observe(p_tok / 1000 * price.input_per_1k + o_tok / 1000 * price.output_per_1k)
            if self.cfg.limits.token_budget_per_min:
                self.shared.charge(key, time.monotonic(), p_tok + o_tok)
        hits, refusal = self.safety.check(prompt, output) if status == 200 else ([], False)
        for rule in hits:
            am.rule(rule).inc()
        self._remember(rid, slot.version, arm)
        if self.spooler is None:
            return
        rl = self.cfg.request_log
        redacted = False
        p_text: str | None = prompt if rl.store_text else None
        o_text: str | None = output if rl.store_text else None
        if rl.redact and rl.store_text:
            p_text, r1 = self.safety.redact(p_text)
            o_text, r2 = self.safety.redact(o_text)
            redacted = r1 or r2
        self._log_row({
            "kind": "request", "request_id": rid, "user_hash": digest.hex() if digest else None,
            "model": self.cfg.model, "model_version": slot.version, "arm": arm, "endpoint": req.path,
            "stream": ex.stream, "status": status, "error_type": error_type, "prompt_tokens": p_tok,
            "output_tokens": o_tok, "ttft_s": ttft, "duration_s": duration, "prompt_text": p_text,
            "output_text": o_text, "redacted": redacted, "guardrail_hits": hits, "refusal": refusal,
            "fallback": fallback, "finish_reason": ex.finish,
            "language": _meta(meta, "language"), "topic": _meta(meta, "topic")})

    def _log_row(self, row: dict[str, Any]) -> None:
        if self.spooler is not None:
            row["ts"] = datetime.now(UTC)
            self.spooler.add(row)

    def _remember(self, rid: str, version: str, arm: str) -> None:
        self.shared.remember(rid, version, arm)  # a fixed-size ring in shared memory: every worker can recall

    # -- feedback -------------------------------------------------------------------------
    def feedback(self, req: Request, client: ClientConnection) -> None:
        try:
            fb = _parse_feedback(req)
        except Rejected as exc:
            client.respond(req, exc.status, error_body(str(exc), exc.kind, exc.code, exc.param))
            return
        rid = fb["request_id"]
        version, arm = self.shared.recall(rid) or ("unknown", "unknown")
        score = fb.get("feedback_score")
        if score is not None:
            m.arm_metrics(self.cfg.model, version, arm).quality.observe(score)
        self._log_row({"kind": "feedback", "model": self.cfg.model, "model_version": None if version == "unknown"
                       else version, "arm": None if arm == "unknown" else arm, "endpoint": "/v1/feedback", **fb})
        client.respond(req, 202, orjson.dumps({"status": "recorded", "request_id": rid,
                                               "known_request": version != "unknown"}))


def _meta(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return str(value)[:64] if value is not None else None


def _parse_feedback(req: Request) -> dict[str, Any]:
    bad = "invalid_request_error"
    if req.too_large:
        raise Rejected(400, "feedback body too large", bad, "request_too_large")
    try:
        body = orjson.loads(req.body)
    except orjson.JSONDecodeError as exc:
        raise Rejected(400, f"feedback body is not valid JSON ({exc})", bad, "invalid_json") from None
    if not isinstance(body, dict):
        raise Rejected(400, "feedback body must be a JSON object {request_id, score|label, reference?}", bad,
                       "invalid_json")
    unknown = set(body) - {"request_id", "score", "label", "reference"}
    if unknown:
        raise Rejected(400, f"unknown feedback field(s) {', '.join(sorted(unknown))}", bad, "invalid_value")
    rid = body.get("request_id")
    if not isinstance(rid, str) or not _REQUEST_ID.fullmatch(rid):
        raise Rejected(400, "request_id must be the X-Request-Id of a response", bad, "invalid_value", "request_id")
    score, label, ref = body.get("score"), body.get("label"), body.get("reference")
    if score is None and label is None:
        raise Rejected(400, "feedback needs a score (0-1) or a label", bad, "invalid_value", "score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                              or not 0 <= score <= 1):
        raise Rejected(400, "score must be a number between 0 and 1", bad, "invalid_value", "score")
    if label is not None and (not isinstance(label, str) or not label or len(label) > 64):
        raise Rejected(400, "label must be a short string (up, down, or your own)", bad, "invalid_value", "label")
    if ref is not None and not isinstance(ref, str):
        raise Rejected(400, "reference must be a string", bad, "invalid_value", "reference")
    if score is None and label is not None:
        score = _THUMBS.get(label.lower())
    return {"request_id": rid, "feedback_score": None if score is None else float(score), "feedback_label": label,
            "reference": ref}
