"""Load shapes and the run loop: closed loop (N users) or open loop (Poisson arrivals).

Timeline of a run::

    t0 ---- warm-up ---- window_start ---------- duration ---------- window_end -- drain --
          (requests sent here are         (requests scheduled here are measured)   (in-flight
           excluded from the metrics)                                               ones finish)

A request belongs to the window its *scheduled* time falls in. At window_end no
new request starts; those in flight finish (or time out) and are counted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from evals.loadgen._http import ConnectionPool, Endpoint, TransportError
from evals.loadgen._record import ERROR, TIMEOUT, RequestRecord

log = logging.getLogger("tollgate.loadgen")

FAILED_USER_PAUSE_S = 0.02


@dataclass(frozen=True)
class ClosedLoop:
    """``users`` virtual users, each sending its next request as soon as the last one ends
    (20 ms later if it failed)."""

    users: int

    def describe(self) -> dict[str, object]:
        return {"mode": "closed", "concurrent_users": self.users}

    def label(self) -> str:
        return f"closed loop, {self.users} users"


@dataclass(frozen=True)
class OpenLoop:
    """Poisson arrivals at ``rate`` requests/s, optionally capped at ``max_concurrency`` in flight.

    Arrivals that find every slot busy wait in the client, first come first
    served; that wait is reported as client queue time, not as latency. Arrivals
    still waiting when the window ends are never sent and are counted as unsent.
    """

    rate: float
    max_concurrency: int | None = None
    seed: int = 0

    def describe(self) -> dict[str, object]:
        return {"mode": "open", "request_rate": self.rate, "max_concurrency": self.max_concurrency,
                "arrivals": "poisson", "seed": self.seed}

    def label(self) -> str:
        cap = f", at most {self.max_concurrency} in flight" if self.max_concurrency else ""
        return f"open loop, Poisson {self.rate:g} req/s{cap}"


LoadShape = ClosedLoop | OpenLoop


@dataclass(frozen=True)
class RunConfig:
    endpoint: Endpoint
    payloads: Sequence[bytes]  # complete HTTP requests, sent round-robin
    shape: LoadShape
    duration_s: float
    warmup_s: float = 0.0
    request_timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    progress_every_s: float = 10.0


@dataclass
class RunResult:
    records: list[RequestRecord]
    t0: float
    window_start: float
    window_end: float
    drained_at: float
    connections_opened: int
    peak_in_flight: int
    shape: LoadShape
    config: RunConfig = field(repr=False)
    stale_connection_retries: int = 0
    unsent: int = 0  # open loop: arrivals still waiting for a slot when the window ended

    @property
    def measured(self) -> list[RequestRecord]:
        return [r for r in self.records if not r.warmup]


def poisson_arrivals(rate: float, seed: int, start: float, end: float) -> Iterator[float]:
    """Arrival times of a Poisson process of ``rate`` per second in [start, end): exponential gaps."""
    rng = random.Random(seed)
    t = start
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            return
        yield t


class _Timeout(Exception):
    pass


class LoadRunner:
    """Drive one load shape against one endpoint and collect a ``RequestRecord`` per request."""

    def __init__(self, config: RunConfig) -> None:
        self.cfg = config
        self.records: list[RequestRecord] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.retries = 0
        self.unsent = 0
        self._next_payload = 0
        self.pool = ConnectionPool(config.endpoint, connect_timeout_s=config.connect_timeout_s)

    async def run(self) -> RunResult:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.t0 = time.perf_counter()
        self.window_start = self.t0 + self.cfg.warmup_s
        self.window_end = self.window_start + self.cfg.duration_s
        progress = asyncio.ensure_future(self._progress())
        try:
            if isinstance(self.cfg.shape, ClosedLoop):
                await asyncio.gather(*(self._user() for _ in range(self.cfg.shape.users)))
            else:
                await self._open_loop(self.cfg.shape)
        finally:
            progress.cancel()
            self.pool.close()
        drained = time.perf_counter()
        return RunResult(self.records, self.t0, self.window_start, self.window_end, drained,
                         self.pool.opened, self.peak_in_flight, self.cfg.shape, self.cfg, self.retries,
                         self.unsent)

    # -- load shapes ---------------------------------------------------------------------
    async def _user(self) -> None:
        end = self.window_end
        while True:
            now = time.perf_counter()
            if now >= end:
                return
            rec = self._new_record(now)
            await self._send(rec)
            if not rec.ok:
                # A server failing fast would otherwise be hammered at client speed and the run
                # would hold millions of records; a failed user pauses briefly (counted, not hidden).
                await asyncio.sleep(FAILED_USER_PAUSE_S)

    async def _open_loop(self, shape: OpenLoop) -> None:
        sem = asyncio.Semaphore(shape.max_concurrency) if shape.max_concurrency else None
        tasks: set[asyncio.Task[None]] = set()
        arrivals = poisson_arrivals(shape.rate, shape.seed, self.t0, self.window_end)
        for target in arrivals:
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            # FIFO: an arrival waits for a slot behind earlier ones, but not past the window's end;
            # a backlog left then is counted as unsent instead of stretching the run for hours.
            left = self.window_end - time.perf_counter()
            try:
                if left <= 0:
                    raise TimeoutError
                if sem is not None:
                    await asyncio.wait_for(sem.acquire(), left)
            except TimeoutError:
                self.unsent = 1 + sum(1 for _ in arrivals)
                break
            rec = self._new_record(target)
            task = asyncio.ensure_future(self._send(rec, sem))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    def _new_record(self, scheduled_at: float) -> RequestRecord:
        rec = RequestRecord(len(self.records), scheduled_at, warmup=scheduled_at < self.window_start)
        self.records.append(rec)
        return rec

    # -- one request ---------------------------------------------------------------------
    async def _send(self, rec: RequestRecord, sem: asyncio.Semaphore | None = None) -> None:
        payloads = self.cfg.payloads
        payload = payloads[self._next_payload % len(payloads)]
        self._next_payload += 1
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        rec.sent_at = time.perf_counter()
        try:
            # A kept-alive connection that the server (or a proxy) closed while it sat idle fails
            # before any response byte: send once more on a new connection, as HTTP clients do.
            # The latency still counts from the first send.
            if await self._attempt(rec, payload, may_retry=True):
                self.retries += 1
                await self._attempt(rec, payload, may_retry=False)
        finally:
            self.in_flight -= 1
            if sem is not None:
                sem.release()

    async def _attempt(self, rec: RequestRecord, payload: bytes, may_retry: bool) -> bool:
        """One try of a request; True when it failed on a stale connection and may be retried."""
        try:
            conn = await self.pool.acquire()
        except TransportError as exc:
            rec.end_at = time.perf_counter()
            rec.fail(TIMEOUT if "timeout" in str(exc) else ERROR, str(exc))
            return False
        reused = conn.uses > 0
        fut: asyncio.Future[tuple[int, float]] = self.loop.create_future()
        remaining = self.cfg.request_timeout_s - (time.perf_counter() - rec.sent_at)
        timer = self.loop.call_later(max(remaining, 0.0), conn.fail_current, _Timeout())
        conn.request(payload, rec.feed, fut)
        try:
            try:
                status, ended_at = await fut
            except _Timeout:
                rec.end_at = time.perf_counter()
                if rec.first_token_at:
                    rec.fail(TIMEOUT, "timeout mid-stream (stalled after first token)")
                else:
                    rec.fail(TIMEOUT, "timeout before first token")
                return False
            except TransportError as exc:
                if may_retry and reused and exc.before_response:
                    return True
                rec.end_at = time.perf_counter()
                where = "mid-stream" if rec.first_token_at else "before first token"
                rec.fail(ERROR, f"{exc} {where}")
                return False
            if status != 200:
                rec.end_at = ended_at
                rec.fail(ERROR, f"http {status}")
                return False
            rec.complete(ended_at)
            return False
        finally:
            timer.cancel()
            self.pool.release(conn)

    async def _progress(self) -> None:
        every = self.cfg.progress_every_s
        while True:
            await asyncio.sleep(every)
            done = sum(1 for r in self.records if r.status)
            errors = sum(1 for r in self.records if r.status and r.status != "ok")
            log.info("progress: %.0f s, %d sent, %d done, %d failed, %d in flight",
                     time.perf_counter() - self.t0, len(self.records), done, errors, self.in_flight)


def run_load(config: RunConfig) -> RunResult:
    """Run a load test on a fresh event loop (uvloop when installed: less client overhead)."""
    import gc

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the lock; pods without it still work
        uvloop = None  # type: ignore[assignment]
    runner = LoadRunner(config)
    # Collections mid-run show up as latency spikes in the client; freeze what exists now.
    gc.collect()
    gc.freeze()
    try:
        if uvloop is not None:
            return uvloop.run(runner.run())
        return asyncio.run(runner.run())
    finally:
        gc.unfreeze()
