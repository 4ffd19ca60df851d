"""``python -m gateway``: the supervisor, its worker processes, the admin API and the background loops.

The supervisor validates the config (bad input: one line, exit 2, before any port is bound),
makes the shared state (:mod:`gateway.shared`), then forks ``--workers`` processes. Each worker
runs a uvloop event loop with its own ``SO_REUSEPORT`` socket on the client port, so the kernel
spreads connections over them. The supervisor itself runs no event loop (it forks before any
thread starts) and keeps four threads:

- the admin API (stdlib HTTP server on ``--admin-port``, bearer token) that changes the routing;
- the routing-file watcher (``routing_file``; the admin API writes the same file, so both agree);
- the upstream poller: ``vllm:num_requests_waiting`` from each slot's ``/metrics`` into
  ``llm_queue_depth``, and whether an upstream answers (``/readyz``);
- the request-log uploader (spool -> S3).

SIGTERM stops the workers gracefully: they stop accepting, finish the streams in flight (up to
``--drain-s``), spool their log rows and exit; the uploader makes one more pass. A worker that dies
on its own ends the whole gateway with exit 1, so a supervisor above (ManagedServer, Kubernetes)
restarts it whole.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from evals import settings
from evals.errors import BadInput, PortInUse
from gateway.config import GatewayConfig, load_config
from gateway.routing import RoutingState, state_from_doc
from gateway.shared import Shared

log = logging.getLogger("tollgate.gateway")


# -- the worker ------------------------------------------------------------------------------


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def _serve(cfg: GatewayConfig, shared: Shared, host: str, port: int, spool: Path | None,
                 drain_s: float) -> None:
    from gateway import metrics as m
    from gateway.http import ClientConnection
    from gateway.proxy import Gateway
    from gateway.reqlog import Spooler
    from gateway.safety import Safety

    loop = asyncio.get_running_loop()
    safety = Safety.load(cfg.policy_path, cfg.guardrails_enabled)
    spooler = None
    if spool is not None:
        spooler = Spooler(spool, cfg.request_log.batch_rows, cfg.request_log.flush_s,
                          on_spooled=lambda n: m.LOG_RECORDS.labels("spooled").inc(n))
    gw = Gateway(cfg, shared, safety, spooler)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # the supervisor decides
    max_body = cfg.limits.max_body_bytes
    server = await loop.create_server(lambda: ClientConnection(gw, max_body), sock=_listen(host, port),
                                      backlog=2048)
    flusher = loop.create_task(spooler.run()) if spooler else None
    import gc

    gc.collect()
    gc.freeze()  # start-up objects (policy regexes, modules) leave the collector's scans: fewer long pauses
    await stop.wait()
    server.close()
    gw.draining = True
    deadline = time.monotonic() + drain_s
    while gw.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # drain poll, bounded by the deadline
    if flusher is not None:
        flusher.cancel()
    if spooler is not None:
        await spooler.close()
    for pool in gw.pools.values():
        pool.close()


def run_worker(cfg: GatewayConfig, shared: Shared, host: str, port: int, spool: Path | None,
               drain_s: float) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from gateway.proxy import reseed_request_ids

    reseed_request_ids()
    try:
        import uvloop

        uvloop.run(_serve(cfg, shared, host, port, spool, drain_s))
    except Exception:  # noqa: BLE001 - a worker's last word goes to the log, the exit code says the rest
        log.exception("gateway worker %d failed", os.getpid())
        return 1
    return 0


# -- the supervisor's routing controller ---------------------------------------------------------


class Controller:
    """The routing state's one writer: admin API and routing file both go through here."""

    def __init__(self, cfg: GatewayConfig, shared: Shared) -> None:
        self.cfg = cfg
        self.shared = shared
        self.lock = threading.Lock()
        self.state = RoutingState.from_config(cfg)
        self._file_sig: tuple[int, int] | None = None
        path = cfg.routing_file
        if path is not None and path.exists():
            self.state = self._read_file(path, 0)
        elif path is not None:
            self._write_file()
        self._publish()

    def _read_file(self, path: Path, generation: int) -> RoutingState:
        from evals import inputs

        doc = inputs.read_json(path, "routing_file")
        self._file_sig = _sig(path)
        return state_from_doc(doc, str(path), self.cfg.model, generation)

    def _write_file(self) -> None:
        path = self.cfg.routing_file
        if path is None:
            return
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.state.as_dict(), indent=2) + "\n")
        os.replace(tmp, path)
        self._file_sig = _sig(path)

    def _publish(self) -> None:
        from gateway import metrics as m

        self.shared.publish(self.state.as_dict())
        m.ROUTING_GENERATION.set(self.state.generation)
        m.CANARY_WEIGHT.labels(self.cfg.model).set(self.state.weight)
        m.announce(self.cfg.model, self.state)  # the slots' series exist at 0 before their first request

    def apply(self, op: str, body: Any) -> RoutingState:
        """One admin operation; BadInput leaves the state exactly as it was."""
        with self.lock:
            cur = self.state
            nxt = {"canary": lambda: cur.with_canary(body), "weight": lambda: cur.with_weight(body),
                   "remove": cur.without_canary, "stable": lambda: cur.with_stable(body)}[op]()
            self.state = nxt
            self._write_file()
            self._publish()
            log.info("routing: %s -> generation %d, weight %d", op, nxt.generation, nxt.weight)
            return nxt

    def check_file(self) -> None:
        path = self.cfg.routing_file
        if path is None:
            return
        sig = _sig(path)
        if sig is None or sig == self._file_sig:
            return
        with self.lock:
            try:
                nxt = self._read_file(path, self.state.generation + 1)
            except BadInput as exc:
                self._file_sig = sig
                log.error("routing file ignored, state unchanged: %s", exc)
                return
            if nxt.same_routing(self.state):
                return
            self.state = nxt
            self._publish()
            log.info("routing file applied: generation %d, weight %d", nxt.generation, nxt.weight)


def _sig(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


# -- the admin API -------------------------------------------------------------------------------


ADMIN_ROUTES = {("PUT", "/admin/canary"): "canary", ("PUT", "/admin/weight"): "weight",
                ("DELETE", "/admin/canary"): "remove", ("PUT", "/admin/stable"): "stable"}


class AdminHandler(BaseHTTPRequestHandler):
    """The admin API: bearer token first (constant-time compare), then one routing operation."""

    protocol_version = "HTTP/1.1"
    controller: Controller
    token: str | None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.info("admin %s", format % args)

    def _send(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, kind: str, message: str) -> None:
        self._send(status, {"error": {"message": message, "type": kind}})

    def _authorized(self) -> bool:
        import hmac

        auth = self.headers.get("Authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if self.token is None:
            self._error(503, "admin_disabled", "admin API disabled: TOLLGATE_GATEWAY_ADMIN_TOKEN is not set")
            return False
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            self._error(401, "unauthorized", "missing or wrong admin token (Authorization: Bearer ...)")
            return False
        return True

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 1 << 16)) if length else b""
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        if method == "GET" and path == "/admin/state":
            self._send(200, self.controller.state.as_dict())
            return
        op = ADMIN_ROUTES.get((method, path))
        if op is None:
            self._error(404, "not_found", f"no admin route {method} {path}")
            return
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError as exc:
            self._error(400, "invalid_json", f"body is not valid JSON ({exc.msg})")
            return
        try:
            state = self.controller.apply(op, body)
        except BadInput as exc:
            self._error(400, "invalid_request_error", str(exc))
            return
        self._send(200, state.as_dict())

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._handle("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")


class _AdminServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def admin_server(host: str, port: int, controller: Controller, token: str | None) -> ThreadingHTTPServer:
    handler = type("BoundAdminHandler", (AdminHandler,), {"controller": controller, "token": token})
    return _AdminServer((host, port), handler)


# -- the upstream poller ---------------------------------------------------------------------------


def _queue_depth(text: str) -> float | None:
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("vllm:num_requests_waiting"):
            try:
                total += float(line.rsplit(" ", 1)[1])
                seen = True
            except (IndexError, ValueError):
                continue
    return total if seen else None


def poll_upstreams(controller: Controller, shared: Shared, stop: threading.Event, every_s: float) -> None:
    import urllib.error
    import urllib.request

    from gateway import metrics as m

    shared.ready_max_age_s = max(10.0, 4 * every_s)
    while True:
        state = controller.state
        answered: list[str] = []
        for arm in ("stable", "canary"):
            slot = state.canary if arm == "canary" else state.stable
            if slot is None:
                continue
            try:
                with urllib.request.urlopen(slot.url + "/metrics", timeout=2) as resp:  # noqa: S310 - configured upstream
                    text = resp.read(4 << 20).decode(errors="replace")
                answered.append(arm)
            except urllib.error.HTTPError:
                answered.append(arm)  # it answers; it just has no metrics
                continue
            except (OSError, ValueError):
                continue
            depth = _queue_depth(text)
            if depth is not None:
                m.QUEUE.labels(controller.cfg.model, slot.version, arm).set(depth)
        detail = f"answering: {', '.join(answered)}" if answered else "no upstream answers"
        shared.set_ready(bool(answered), detail, time.monotonic())
        if stop.wait(every_s):
            return


# -- the supervisor ------------------------------------------------------------------------------------


def _check_port(host: str, port: int, what: str, env_var: str) -> None:
    from evals.launcher.process import port_is_free

    if not port_is_free(host, port):
        raise PortInUse(host, port, env_var, what)


def _prepare_metrics_dir(port: int) -> Path:
    d = settings.home() / "gateway" / f"metrics-{port}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(d)
    return d


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from evals._cli import flag_type

    env = settings.current()
    p = argparse.ArgumentParser(prog="python -m gateway", description="The Tollgate gateway: an OpenAI-compatible "
                                "proxy with canary routing, limits, metrics and a request log.")
    p.add_argument("--config", required=True, help="the gateway config file (YAML or JSON)")
    p.add_argument("--host", default=settings.LOOPBACK, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=flag_type(settings.port), default=env.gateway_port,
                   help="client port (default $TOLLGATE_GATEWAY_PORT)")
    p.add_argument("--admin-port", type=flag_type(settings.port), default=env.gateway_admin_port,
                   help="admin API port (default $TOLLGATE_GATEWAY_ADMIN_PORT)")
    p.add_argument("--workers", type=flag_type(settings.positive_int), default=env.gateway_workers,
                   help="worker processes (default $TOLLGATE_GATEWAY_WORKERS)")
    p.add_argument("--drain-s", type=flag_type(settings.positive_float), default=15.0,
                   help="on stop, seconds the streams in flight may take to finish")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:  # noqa: C901 - the supervisor's life cycle, in order
    args = parse_args(argv)
    cfg = load_config(args.config)
    if args.port == args.admin_port:
        raise BadInput(f"--port and --admin-port are both {args.port}")
    _check_port(args.host, args.port, "the gateway", "TOLLGATE_GATEWAY_PORT")
    _check_port(args.host, args.admin_port, "the gateway admin API", "TOLLGATE_GATEWAY_ADMIN_PORT")
    token = settings.current().gateway_admin_token
    _prepare_metrics_dir(args.port)
    from gateway import metrics as m
    from gateway.reqlog import Uploader, default_spool_dir, ensure_dir

    rl = cfg.request_log
    spool = ensure_dir(rl.spool_dir or default_spool_dir()) if rl.enabled else None
    shared = Shared()
    controller = Controller(cfg, shared)
    admin = admin_server(args.host, args.admin_port, controller, token)  # bound before the fork: no port race
    workers: dict[int, int] = {}
    for i in range(args.workers):
        pid = os.fork()
        if pid == 0:
            admin.socket.close()
            os._exit(run_worker(cfg, shared, args.host, args.port, spool, args.drain_s))
        workers[pid] = i
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = [threading.Thread(target=admin.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                                name="admin"),
               threading.Thread(target=poll_upstreams, args=(controller, shared, stop, cfg.upstream_metrics_poll_s),
                                daemon=True, name="poller")]
    uploader = None
    if spool is not None:
        dest = rl.dest or f"s3://{settings.current().s3_bucket}"
        uploader = Uploader(spool, dest, rl.flush_s, on_uploaded=lambda n: m.LOG_RECORDS.labels("uploaded").inc(n),
                            on_error=m.LOG_UPLOAD_ERRORS.inc, on_backlog=m.LOG_SPOOL_FILES.set)
        uploader.stop = stop
        threads.append(threading.Thread(target=uploader.run, daemon=True, name="uploader"))
    for t in threads:
        t.start()
    print(f"gateway: serving {cfg.model} on http://{args.host}:{args.port} ({args.workers} workers), admin API on "
          f"http://{args.host}:{args.admin_port}{'' if token else ' (disabled: no TOLLGATE_GATEWAY_ADMIN_TOKEN)'}",
          flush=True)
    code = 0
    while not stop.wait(0.1):
        controller.check_file()
        pid, status = _reap()
        if pid:
            log.error("gateway worker %d exited (status %d); stopping the gateway", pid, status)
            workers.pop(pid, None)
            m.mark_dead(pid)
            code = 1
            break
    admin.shutdown()
    for pid in workers:
        with _suppress():
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.drain_s + 5
    while workers and time.monotonic() < deadline:
        pid, _ = _reap()
        if pid:
            workers.pop(pid, None)
            m.mark_dead(pid)
        else:
            time.sleep(0.05)
    for pid in workers:
        with _suppress():
            os.kill(pid, signal.SIGKILL)
    if uploader is not None:
        uploader.final()
    return code


def _reap() -> tuple[int, int]:
    try:
        pid, status = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return 0, 0
    return pid, status


class _suppress:  # noqa: N801 - reads like contextlib.suppress, for the one error kill can raise here
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is ProcessLookupError


if __name__ == "__main__":
    from evals._cli import exit_with

    exit_with(main)
