"""Production-like traffic for the gateway: ``python -m evals.traffic``.

Replays a prompt file (JSON lines: ``prompt``, ``user_id``, optional ``reference``,
``topic``, ``language``) against an OpenAI-compatible endpoint (the gateway) as
streaming chat completions, open loop (Poisson arrivals at ``--rate`` req/s, as users
arrive whether or not the server keeps up), each request with its user (the
``user`` field: sticky arm assignment) and its ``metadata`` (topic, language: the
request log records them). When a line has a reference, the answer is graded against
it (normalized exact match, token-F1 partial credit: evals.canary.stats) and the
score is sent as feedback (``POST /v1/feedback``) with the reference, as a client
that checks its answers would.

``--scenario steady`` replays evals/datasets/traffic/steady.jsonl (short English order
lines); ``--scenario drift`` moves over the run from that mix to drift.jsonl (longer
prompts, support questions, Spanish/German/French): the share of drifted prompts grows
linearly from 0 at the start to 1 at ``--drift-at`` of the run and stays there.

Bounded: it stops by itself after ``--duration`` seconds or ``--requests`` requests,
whichever comes first, never keeps more than ``--max-in-flight`` requests open (an
arrival that finds them all busy is skipped and counted, never queued without bound),
and sends to loopback addresses only unless ``--allow-remote``. It is built on the
load generator of ``python -m evals.benchmark`` (evals.loadgen: its HTTP/1.1 client,
SSE timing and Poisson arrivals).

    python -m evals.traffic --endpoint http://127.0.0.1:8000 --model smollm2-orders \\
        --rate 1 --duration 300 --scenario drift --output traffic.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from evals import inputs, settings
from evals._cli import exit_with, flag_type
from evals.canary.stats import order_line_quality
from evals.errors import BadInput
from evals.loadgen import ConnectionPool, Endpoint, RequestRecord, TransportError, build_post
from evals.loadgen._runner import poisson_arrivals

log = logging.getLogger("tollgate.traffic")

DATASETS = settings.REPO_ROOT / "evals" / "datasets" / "traffic"
SCENARIOS: dict[str, tuple[Path, Path]] = {"steady": (DATASETS / "steady.jsonl", DATASETS / "drift.jsonl"),
                                          "drift": (DATASETS / "steady.jsonl", DATASETS / "drift.jsonl")}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_CAPTURE = 64 * 1024  # bytes of one answer kept for grading
MAX_DURATION_S = 7 * 24 * 3600.0
MAX_REQUESTS = 10_000_000


@dataclass(frozen=True)
class Prompt:
    prompt: str
    user_id: str
    reference: str | None = None
    topic: str | None = None
    language: str | None = None


def load_prompts(path: Path, flag: str) -> list[Prompt]:
    """The prompt file; a line without a prompt or user id, or with a non-string field, is bad input."""
    rows = []
    for n, obj in inputs.json_lines(path, flag, "an object with prompt and user_id"):
        user = obj.get("user_id", obj.get("user"))
        prompt = obj.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadInput(f"{flag} {path} line {n}: 'prompt' must be a non-empty string")
        if not isinstance(user, str) or not user.strip():
            raise BadInput(f"{flag} {path} line {n}: 'user_id' must be a non-empty string")
        for key in ("reference", "topic", "language"):
            if obj.get(key) is not None and not isinstance(obj[key], str):
                raise BadInput(f"{flag} {path} line {n}: '{key}' must be a string")
        rows.append(Prompt(prompt, user, obj.get("reference"), obj.get("topic"), obj.get("language")))
    if not rows:
        raise BadInput(f"{flag} {path}: no prompts")
    return rows


@dataclass(frozen=True)
class TrafficConfig:
    endpoint: Endpoint
    model: str
    base: list[Prompt]
    drifted: list[Prompt] | None = None
    rate: float = 1.0
    duration_s: float = 60.0
    requests: int | None = None
    max_tokens: int = 32
    max_in_flight: int = 8
    drift_at: float = 0.5
    feedback: bool = True
    seed: int = 0
    request_timeout_s: float = 60.0
    api_key: str | None = None
    user_spread: int = 1  # each line's user becomes one of this many (USER.0 .. USER.K-1), drawn per request


@dataclass
class Summary:
    """What was sent and what came back (the ``--output`` file and the last log line)."""

    sent: int = 0
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    skipped_busy: int = 0
    feedback_sent: int = 0
    feedback_failed: int = 0
    drifted: int = 0
    scores: list[float] = field(default_factory=list)
    topics: Counter[str] = field(default_factory=Counter)
    languages: Counter[str] = field(default_factory=Counter)
    prompt_chars: int = 0
    started: float = 0.0
    finished: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent, "ok": self.ok, "failed": sum(self.failed.values()), "failures": dict(self.failed),
            "skipped_busy": self.skipped_busy, "feedback_sent": self.feedback_sent,
            "feedback_failed": self.feedback_failed, "drifted_prompts": self.drifted,
            "mean_score": round(sum(self.scores) / len(self.scores), 4) if self.scores else None,
            "mean_prompt_chars": round(self.prompt_chars / self.sent, 1) if self.sent else None,
            "topics": dict(self.topics), "languages": dict(self.languages),
            "duration_s": round(self.finished - self.started, 3),
        }


class _Capture:
    """Body sink: feeds the loadgen's SSE timing record and keeps the bytes to read the answer."""

    __slots__ = ("record", "raw", "size")

    def __init__(self, record: RequestRecord) -> None:
        self.record = record
        self.raw: list[bytes] = []
        self.size = 0

    def __call__(self, data: bytes, now: float) -> None:
        self.record.feed(data, now)
        if self.size < MAX_CAPTURE:
            self.raw.append(data)
            self.size += len(data)

    def text(self) -> str:
        """The generated text: the ``delta.content`` of every SSE event."""
        parts = []
        for event in b"".join(self.raw).replace(b"\r\n", b"\n").split(b"\n\n"):
            for line in event.split(b"\n"):
                if not line.startswith(b"data:") or line.strip() == b"data: [DONE]":
                    continue
                try:
                    obj = json.loads(line[5:])
                    delta = obj["choices"][0].get("delta") or {}
                except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                    continue
                parts.append(delta.get("content") or "")
        return "".join(parts)


class TrafficRunner:
    def __init__(self, cfg: TrafficConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.summary = Summary()
        self.in_flight = 0
        self.pool = ConnectionPool(cfg.endpoint)

    def pick(self, elapsed_share: float) -> tuple[Prompt, bool]:
        """The next prompt: from the drifted set with a probability growing over the run."""
        cfg = self.cfg
        drift_share = 0.0 if cfg.drifted is None else min(1.0, elapsed_share / cfg.drift_at)
        if cfg.drifted is not None and self.rng.random() < drift_share:
            chosen, drifted = self.rng.choice(cfg.drifted), True
        else:
            chosen, drifted = self.rng.choice(cfg.base), False
        if cfg.user_spread > 1:  # many users from a small file: sticky routing then splits near its weight
            chosen = replace(chosen, user_id=f"{chosen.user_id}.{self.rng.randrange(cfg.user_spread)}")
        return chosen, drifted

    def headers(self, request_id: str | None = None) -> dict[str, str]:
        out = {"X-Request-Id": request_id} if request_id else {}
        if self.cfg.api_key:
            out["Authorization"] = f"Bearer {self.cfg.api_key}"
        return out

    def chat_body(self, p: Prompt) -> bytes:
        metadata = {k: v for k, v in (("topic", p.topic), ("language", p.language)) if v}
        body: dict[str, Any] = {
            "model": self.cfg.model, "messages": [{"role": "user", "content": p.prompt}], "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": self.cfg.max_tokens, "temperature": 0,
            "user": p.user_id,
        }
        if metadata:
            body["metadata"] = metadata
        return json.dumps(body).encode()

    async def run(self) -> Summary:
        cfg, s = self.cfg, self.summary
        s.started = time.perf_counter()
        end = s.started + cfg.duration_s
        tasks: set[asyncio.Task[None]] = set()
        progress = asyncio.ensure_future(self._progress())
        launched = 0  # --requests counts requests sent; an arrival skipped while busy does not use one up
        try:
            for arrival in poisson_arrivals(cfg.rate, cfg.seed, s.started, end):
                if cfg.requests is not None and launched >= cfg.requests:
                    break
                delay = arrival - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(tasks) >= cfg.max_in_flight:
                    s.skipped_busy += 1
                    continue
                launched += 1
                prompt, drifted = self.pick((arrival - s.started) / cfg.duration_s)
                task = asyncio.ensure_future(self.one(prompt, drifted))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=cfg.request_timeout_s * 2 + 10)
        finally:
            progress.cancel()
            for task in tasks:
                task.cancel()
            self.pool.close()
        s.finished = time.perf_counter()
        return s

    async def one(self, p: Prompt, drifted: bool) -> None:
        s = self.summary
        s.sent += 1
        s.drifted += drifted
        s.topics[p.topic or "none"] += 1
        s.languages[p.language or "none"] += 1
        s.prompt_chars += len(p.prompt)
        request_id = uuid.uuid4().hex
        record = RequestRecord(s.sent, time.perf_counter())
        capture = _Capture(record)
        payload = build_post(self.cfg.endpoint, "/chat/completions", self.chat_body(p), self.headers(request_id))
        self.in_flight += 1
        try:
            status = await self._exchange(payload, capture)
        finally:
            self.in_flight -= 1
        if status != 200:
            s.failed[f"http {status}" if status else "transport"] += 1
            return
        record.complete(time.perf_counter())
        if not record.ok:
            s.failed[record.reason or record.status] += 1
            return
        s.ok += 1
        if self.cfg.feedback and p.reference:
            await self.feedback(request_id, order_line_quality(capture.text(), p.reference), p.reference)

    async def feedback(self, request_id: str, score: float, reference: str) -> None:
        s = self.summary
        s.scores.append(score)
        body = json.dumps({"request_id": request_id, "score": round(score, 4), "reference": reference}).encode()
        headers = {**self.headers(), "Accept": "application/json"}
        status = await self._exchange(build_post(self.cfg.endpoint, "/feedback", body, headers), lambda *_: None)
        if status in (200, 201, 202, 204):
            s.feedback_sent += 1
        else:
            s.feedback_failed += 1
            log.debug("feedback for %s: HTTP %s", request_id, status)

    async def _exchange(self, payload: bytes, sink: Any) -> int:
        """Send one request on a pooled connection; its HTTP status, 0 on a transport failure or timeout."""
        loop = asyncio.get_running_loop()
        try:
            conn = await self.pool.acquire()
        except TransportError:
            return 0
        fut: asyncio.Future[tuple[int, float]] = loop.create_future()
        timer = loop.call_later(self.cfg.request_timeout_s, conn.fail_current, TimeoutError("request timeout"))
        conn.request(payload, sink, fut)
        try:
            status, _ = await fut
            return status
        except (TransportError, TimeoutError):
            return 0
        finally:
            timer.cancel()
            self.pool.release(conn)

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(10.0)
            s = self.summary
            log.info("traffic: %d sent, %d ok, %d failed, %d feedback, %d in flight",
                     s.sent, s.ok, sum(s.failed.values()), s.feedback_sent, self.in_flight)


def run_traffic(cfg: TrafficConfig) -> Summary:
    return asyncio.run(TrafficRunner(cfg).run())


def check_endpoint(url: str, allow_remote: bool) -> Endpoint:
    endpoint = Endpoint.parse(url)
    if endpoint.host not in LOOPBACK_HOSTS and not allow_remote:
        raise BadInput(f"--endpoint {url!r} is not a loopback address (127.0.0.1); pass --allow-remote to send "
                       "generated traffic elsewhere")
    return endpoint


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m evals.traffic", description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", default=None, help="the gateway's base URL (else TOLLGATE_ENDPOINT)")
    p.add_argument("--model", required=True, help="the model name the gateway serves")
    p.add_argument("--scenario", choices=tuple(SCENARIOS), default="steady")
    p.add_argument("--prompts", type=Path, default=None, help="replay this prompt file instead of the scenario's")
    p.add_argument("--drift-prompts", type=Path, default=None, help="the drifted mix (--scenario drift)")
    p.add_argument("--drift-at", type=flag_type(settings.number(float, above=0, maximum=1)), default=0.5,
                   help="share of the run after which every prompt comes from the drifted mix")
    p.add_argument("--rate", type=flag_type(settings.number(float, above=0, maximum=1000)), default=1.0,
                   help="arrivals per second (open loop, Poisson)")
    p.add_argument("--duration", type=flag_type(settings.number(float, above=0, maximum=MAX_DURATION_S)),
                   default=60.0, help="seconds; it stops by itself")
    p.add_argument("--requests", type=flag_type(settings.number(int, minimum=1, maximum=MAX_REQUESTS)),
                   default=None, help="stop after sending this many requests, if before --duration "
                   "(arrivals skipped while --max-in-flight are open do not count)")
    p.add_argument("--max-tokens", type=flag_type(settings.number(int, minimum=1, maximum=4096)), default=32)
    p.add_argument("--max-in-flight", type=flag_type(settings.number(int, minimum=1, maximum=1024)), default=8)
    p.add_argument("--request-timeout", type=flag_type(settings.positive_float), default=60.0)
    p.add_argument("--user-spread", type=flag_type(settings.number(int, minimum=1, maximum=100000)), default=1,
                   help="replay each line's user as one of this many users (USER.0 .. USER.K-1, drawn per "
                   "request): a 5 %% canary of sticky users needs more users than a prompt file holds")
    p.add_argument("--no-feedback", action="store_true", help="do not POST /v1/feedback")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback endpoint")
    p.add_argument("--output", type=Path, default=None, help="write the summary JSON here")
    p.add_argument("--min-ok", type=flag_type(settings.non_negative_int), default=1,
                   help="exit 1 when fewer requests than this succeed")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrafficConfig:
    env = settings.current()
    url = args.endpoint or env.endpoint
    if not url:
        raise BadInput("--endpoint is required (or set TOLLGATE_ENDPOINT)")
    base_path, drift_path = SCENARIOS[args.scenario]
    base = load_prompts(args.prompts or base_path, "--prompts")
    drifted = None
    if args.scenario == "drift":
        drifted = load_prompts(args.drift_prompts or drift_path, "--drift-prompts")
    elif args.drift_prompts is not None:
        raise BadInput("--drift-prompts needs --scenario drift")
    return TrafficConfig(
        endpoint=check_endpoint(url, args.allow_remote), model=args.model, base=base, drifted=drifted,
        rate=args.rate, duration_s=args.duration, requests=args.requests, max_tokens=args.max_tokens,
        max_in_flight=args.max_in_flight, drift_at=args.drift_at, feedback=not args.no_feedback, seed=args.seed,
        user_spread=args.user_spread,
        request_timeout_s=args.request_timeout, api_key=env.api_key,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)
    if args.output is not None and not args.output.parent.is_dir():
        raise BadInput(f"--output {args.output}: folder {args.output.parent} does not exist")
    log.info("traffic to %s (%s): %s, %.3g req/s for at most %.0f s%s", cfg.endpoint.url, cfg.model, args.scenario,
             cfg.rate, cfg.duration_s, f" or {cfg.requests} requests" if cfg.requests else "")
    summary = run_traffic(cfg).as_dict()
    summary["scenario"] = args.scenario
    text = json.dumps(summary, indent=2, sort_keys=True)
    if args.output is not None:
        args.output.write_text(text + "\n")
    print(text)
    return 0 if summary["sent"] and summary["ok"] >= args.min_ok else 1


if __name__ == "__main__":
    exit_with(main)
