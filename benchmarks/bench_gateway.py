"""The gateway's cost per request: the instant streaming stub direct, through nginx, through the gateway.

    .venv/bin/python -m benchmarks.bench_gateway                      # the table (~4 min)
    .venv/bin/python -m benchmarks.bench_gateway --soak --soak-seconds 600   # RSS over a soak, 10,000 users

One run, one table. Targets: the instant 8-token stub (tests/fixtures/stream_stub.py) reached
directly, through Debian's nginx (`proxy_buffering off`, upstream keep-alive: the floor for a proxy
hop) and through the gateway (2 workers, metrics, guardrails, redaction and the Parquet request
log all on, log to a local folder). Loads: closed loop at 64 and 256 streams, open loop (Poisson)
at fixed rates. Per row: req/s, errors, added p50/p99 latency and TTFT vs direct at the same load,
CPU seconds per 1,000 requests of the proxy's process group (/proc), and the chunk check: a stub
that spaces its 8 tokens 20 ms apart, 16 streams, the median gap between token arrivals at the
client (a proxy that buffers shows gaps near 0). The load generator is evals.loadgen (the one
evals.benchmark drives), in its own process. Every server runs in its own process group and is
stopped on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.launcher import ManagedServer, ServerSpec, free_port
from evals.launcher.gateway import gateway_spec, write_config
from tests.fixtures.stream_stub import stub_spec  # run as `python -m benchmarks.bench_gateway` from the checkout

REPO = Path(__file__).resolve().parent.parent
STUB_MODEL = "stub:1"
NGINX = "/usr/sbin/nginx"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the load, in its own process ------------------------------------------------------------------


def load_worker(spec_path: str) -> int:
    """``--load-worker SPEC.json``: run one load with evals.loadgen and write per-request timings."""
    from evals.loadgen import ClosedLoop, Endpoint, OpenLoop, RunConfig, build_post, run_load

    spec = json.loads(Path(spec_path).read_text())
    ep = Endpoint.parse(spec["url"])
    users = spec.get("users_distinct", 0)
    payloads = []
    for i in range(max(1, users or 64)):
        body: dict[str, Any] = {"model": STUB_MODEL, "prompt": f"Normalize this order line #{i}", "max_tokens": 8,
                                "stream": True, "stream_options": {"include_usage": True}}
        if users:
            body["user"] = f"user-{i}"
        payloads.append(build_post(ep, "/completions", json.dumps(body).encode()))
    shape = ClosedLoop(spec["users"]) if spec.get("users") else OpenLoop(spec["rate"], max_concurrency=2048)
    res = run_load(RunConfig(ep, payloads, shape, duration_s=spec["seconds"], warmup_s=spec["warmup"],
                             request_timeout_s=30, progress_every_s=1e9))
    recs = res.measured
    ok = [r for r in recs if r.status == "ok"]
    out = {
        "n": len(recs), "ok": len(ok), "errors": len(recs) - len(ok), "unsent": res.unsent,
        "seconds": res.window_end - res.window_start,
        "latency_ms": [(r.end_at - r.sent_at) * 1000 for r in ok],
        "ttft_ms": [(r.first_token_at - r.sent_at) * 1000 for r in ok if r.first_token_at],
        "gaps_ms": [(b - a) * 1000 for r in ok[:2000] for a, b in zip(r.token_times, r.token_times[1:], strict=False)],
        "reasons": sorted({r.reason for r in recs if r.status != "ok"})[:5],
    }
    Path(spec["out"]).write_text(json.dumps(out))
    return 0


def run_load_proc(work: Path, tag: str, url: str, *, users: int = 0, rate: float = 0.0, seconds: float,
                  warmup: float, users_distinct: int = 0) -> dict[str, Any]:
    spec = work / f"{tag}.spec.json"
    out = work / f"{tag}.out.json"
    spec.write_text(json.dumps({"url": url, "users": users, "rate": rate, "seconds": seconds, "warmup": warmup,
                                "out": str(out), "users_distinct": users_distinct}))
    subprocess.run([sys.executable, "-m", "benchmarks.bench_gateway", "--load-worker", str(spec)], cwd=REPO,
                   check=True, timeout=seconds + warmup + 120)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# -- the rejected stack, for comparison: aiohttp server + aiohttp client, pass-through only ----------


def aiohttp_proxy(port: int, upstream: str) -> int:
    """``--aiohttp-proxy PORT UPSTREAM``: a featureless streaming proxy on aiohttp (no metrics, no log)."""
    import asyncio

    import aiohttp
    import uvloop
    from aiohttp import web

    async def main() -> None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60))

        async def health(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        async def proxy(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            async with session.post(upstream + request.path, data=body,
                                    headers={"Content-Type": "application/json"}) as up:
                resp = web.StreamResponse(status=up.status, headers={"Content-Type": up.headers.get(
                    "Content-Type", "application/json")})
                await resp.prepare(request)
                async for chunk in up.content.iter_any():  # forward each piece as it arrives
                    await resp.write(chunk)
                await resp.write_eof()
                return resp

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_post("/v1/completions", proxy)
        app.router.add_post("/v1/chat/completions", proxy)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
        await asyncio.Event().wait()

    uvloop.run(main())
    return 0


def aiohttp_spec(port: int, upstream: str) -> ServerSpec:
    return ServerSpec(name=f"bench-aiohttp-{port}", argv=[sys.executable, "-m", "benchmarks.bench_gateway",
                                                          "--aiohttp-proxy", str(port), upstream],
                      port=port, health_path="/health", cwd=str(REPO), ready_timeout_s=30)


# -- process accounting -----------------------------------------------------------------------------


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def group_cpu_s(pgid: int) -> float:
    total = 0
    for pid in group_pids(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def group_rss_mb(pgid: int) -> float:
    total = 0
    for pid in group_pids(pgid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


# -- the servers -------------------------------------------------------------------------------------


def nginx_spec(work: Path, port: int, upstream_port: int, workers: int) -> ServerSpec:
    root = work / "nginx"
    root.mkdir(exist_ok=True)
    conf = root / "nginx.conf"
    temp = "\n".join(f"    {k}_temp_path {root}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(f"""daemon off;
master_process on;
worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
{temp}
    upstream stub {{ server 127.0.0.1:{upstream_port}; keepalive 512; }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://stub;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
""")
    return ServerSpec(name=f"bench-nginx-{port}", argv=[NGINX, "-p", str(root), "-c", str(conf), "-e", "stderr"],
                      port=port, health_path="/health", ready_timeout_s=20)


def started(spec: ServerSpec) -> ManagedServer:
    srv = ManagedServer(spec)
    srv.start()
    try:
        srv.wait_ready()
    except BaseException:
        srv.stop()
        raise
    return srv


# -- report ------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


@dataclass
class Row:
    load: str
    target: str
    res: dict[str, Any]
    cpu_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return float(self.res["ok"]) / max(self.res["seconds"], 1e-9)


def cell_rows(rows: list[Row]) -> list[list[str]]:
    direct = {r.load: r for r in rows if r.target == "direct"}
    out = []
    for r in rows:
        d = direct.get(r.load)
        lat50, lat99 = pct(r.res["latency_ms"], 50), pct(r.res["latency_ms"], 99)
        tt50 = pct(r.res["ttft_ms"], 50)

        def added(mine: float | None, base: list[float] | None, q: float, r: Row = r) -> str:
            if r.target == "direct" or mine is None or not base:
                return "-"
            ref = pct(base, q)
            return fmt(mine - ref) if ref is not None else "-"

        cpu = f"{r.cpu_s / max(r.res['ok'], 1) * 1000:.2f}" if r.cpu_s is not None else "-"
        out.append([r.load, r.target, fmt(r.rps, 0), str(r.res["errors"] + r.res.get("unsent", 0)),
                    fmt(lat50), fmt(lat99), added(lat50, d.res["latency_ms"] if d else None, 50),
                    added(lat99, d.res["latency_ms"] if d else None, 99),
                    added(tt50, d.res["ttft_ms"] if d else None, 50), cpu])
    return out


def main() -> int:  # noqa: C901 - one script: start, measure, report, stop
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--load-worker", help=argparse.SUPPRESS)
    ap.add_argument("--aiohttp-proxy", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--no-aiohttp", action="store_true", help="skip the aiohttp comparison rows")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per row")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rates", default="500,1000,1500", help="open-loop rates, req/s")
    ap.add_argument("--workers", type=int, default=2, help="gateway workers and nginx worker_processes")
    ap.add_argument("--soak", action="store_true", help="run the soak only: RSS of the gateway over time")
    ap.add_argument("--soak-seconds", type=float, default=600.0)
    ap.add_argument("--soak-rate", type=float, default=500.0)
    ap.add_argument("--write", help="write the report (markdown) to this file too")
    args = ap.parse_args()
    if args.load_worker:
        return load_worker(args.load_worker)
    if args.aiohttp_proxy:
        return aiohttp_proxy(int(args.aiohttp_proxy[0]), args.aiohttp_proxy[1])

    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    servers: list[ManagedServer] = []
    load_before = os.getloadavg()
    report: list[str] = []
    try:
        stub = started(stub_spec(free_port(), tokens=8, name="bench-gw-stub"))
        servers.append(stub)
        cfg = write_config(work / "gateway.json", model=STUB_MODEL, stable_url=stub.spec.base_url,
                           stable_version="1", prices={"default": {"input_per_1k": 0.0005, "output_per_1k": 0.0015}},
                           request_log={"dest": str(work / "logs"), "spool_dir": str(work / "spool"),
                                        "flush_s": 2.0})
        gw_spec = gateway_spec(cfg, port=free_port(), admin_port=free_port(), workers=args.workers,
                               name="bench-gateway")
        gw = started(gw_spec)
        servers.append(gw)
        if args.soak:
            return soak(args, work, gw, report)
        nginx = started(nginx_spec(work, free_port(), stub.spec.port, args.workers))
        servers.append(nginx)
        targets = {"direct": (stub.spec.base_url, None), "nginx": (nginx.spec.base_url, nginx),
                   "gateway": (gw_spec.base_url, gw)}
        if not args.no_aiohttp:  # one process: the rejected stack without any of the gateway's features
            aio = started(aiohttp_spec(free_port(), stub.spec.base_url))
            servers.append(aio)
            targets["aiohttp (1 proc, pass-through)"] = (aio.spec.base_url, aio)
        loads: list[tuple[str, dict[str, Any]]] = [("closed 64", {"users": 64}), ("closed 256", {"users": 256})]
        loads += [(f"open {float(r):g}/s", {"rate": float(r)}) for r in args.rates.split(",") if r]
        rows: list[Row] = []
        for label, shape in loads:
            for target, (url, srv) in targets.items():
                assert srv is None or srv.proc is not None
                pg = srv.proc.pid if srv is not None and srv.proc is not None else None
                cpu0 = group_cpu_s(pg) if pg else None
                tag = f"{label.replace(' ', '_').replace('/', '')}-{target}"
                res = run_load_proc(work, tag, url, seconds=args.seconds, warmup=args.warmup, **shape)
                cpu = group_cpu_s(pg) - cpu0 if pg and cpu0 is not None else None
                # the CPU counter spans warmup + window; scale it to the measured requests' share
                if cpu is not None:
                    cpu *= args.seconds / (args.seconds + args.warmup)
                rows.append(Row(label, target, res, cpu))
                print(f"[{label}] {target}: {rows[-1].rps:,.0f} req/s, {res['errors']} errors, "
                      f"p50 {fmt(pct(res['latency_ms'], 50))} ms {res['reasons']}", flush=True)
        # chunk timing: tokens 20 ms apart; a proxy that buffers collapses the gaps
        paced = started(stub_spec(free_port(), tokens=8, itl_ms=20.0, name="bench-gw-stub-paced"))
        servers.append(paced)
        nginx.stop()
        gw.stop()
        nginx2 = started(nginx_spec(work, free_port(), paced.spec.port, args.workers))
        servers.append(nginx2)
        cfg2 = write_config(work / "gateway-paced.json", model=STUB_MODEL, stable_url=paced.spec.base_url,
                            stable_version="1", request_log={"dest": str(work / "logs2"),
                                                             "spool_dir": str(work / "spool2")})
        gw2_spec = gateway_spec(cfg2, port=free_port(), admin_port=free_port(), workers=args.workers,
                                name="bench-gateway-paced")
        gw2 = started(gw2_spec)
        servers.append(gw2)
        gaps: dict[str, dict[str, Any]] = {}
        for target, url in (("direct", paced.spec.base_url), ("nginx", nginx2.spec.base_url),
                            ("gateway", gw2_spec.base_url)):
            res = run_load_proc(work, f"paced-{target}", url, users=16, seconds=4, warmup=1)
            g = res["gaps_ms"]
            gaps[target] = {"p50": pct(g, 50), "p10": pct(g, 10), "under5": sum(x < 5 for x in g) / max(len(g), 1),
                            "n": len(g), "ttft": pct(res["ttft_ms"], 50)}
    finally:
        for srv in reversed(servers):
            srv.stop()

    headers = ["load", "target", "req/s", "errors", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms",
               "added TTFT p50 ms", "proxy CPU s / 1k req"]
    report.append(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}; "
                  f"1-min load average {load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end (other work "
                  "shares these cores; the load generator and the stub run on them too)")
    report.append(f"\nInstant 8-token streaming stub, /v1/completions, {args.seconds:g} s per row after "
                  f"{args.warmup:g} s warm-up; gateway: {args.workers} workers, metrics + guardrails + redaction + "
                  f"Parquet log on; nginx: {args.workers} workers, proxy_buffering off, upstream keepalive\n")
    report.append(table(headers, cell_rows(rows)))
    report.append("\nChunk timing: stub sends 8 tokens 20 ms apart, 16 streams; gaps between token arrivals at the "
                  "client\n")
    report.append(table(["target", "gap p50 ms", "gap p10 ms", "gaps < 5 ms", "gaps", "TTFT p50 ms"], [
        [t, fmt(v["p50"]), fmt(v["p10"]), f"{v['under5'] * 100:.1f} %", str(v["n"]), fmt(v["ttft"])]
        for t, v in gaps.items()]))
    gw_rows = {r.load: r for r in rows if r.target == "gateway"}
    ng_rows = {r.load: r for r in rows if r.target == "nginx"}
    best = max((r.rps for r in gw_rows.values() if r.res["errors"] == 0 and not r.res.get("unsent")), default=0.0)
    goals = [f"- gateway >= 1,500 streaming req/s with zero errors: {'met' if best >= 1500 else 'NOT met'} "
             f"(best error-free row {best:,.0f} req/s)"]
    at1000 = next((r for k, r in gw_rows.items() if k.startswith("open 1000")), None)
    direct1000 = next((r for r in rows if r.target == "direct" and r.load.startswith("open 1000")), None)
    if at1000 and direct1000:
        a50 = (pct(at1000.res["latency_ms"], 50) or 0) - (pct(direct1000.res["latency_ms"], 50) or 0)
        a99 = (pct(at1000.res["latency_ms"], 99) or 0) - (pct(direct1000.res["latency_ms"], 99) or 0)
        goals.append(f"- added p50 <= 1 ms and p99 <= 5 ms at 1,000 req/s: "
                     f"{'met' if a50 <= 1 and a99 <= 5 else 'NOT met'} ({a50:+.2f} / {a99:+.2f} ms)")
    ratios = [(gw_rows[k].cpu_s or 0) / max(gw_rows[k].res["ok"], 1) / max((ng_rows[k].cpu_s or 0)
              / max(ng_rows[k].res["ok"], 1), 1e-9) for k in gw_rows if k in ng_rows and ng_rows[k].cpu_s]
    if ratios:
        med = statistics.median(ratios)
        goals.append(f"- within 3x nginx's CPU per request: {'met' if med <= 3 else 'NOT met'} (median {med:.1f}x)")
    if gaps:
        same = gaps["gateway"]["under5"] <= gaps["direct"]["under5"] + 0.02
        goals.append(f"- every chunk forwarded as it arrives (gap distribution as direct): "
                     f"{'met' if same else 'NOT met'} (gaps < 5 ms: gateway {gaps['gateway']['under5'] * 100:.1f} %, "
                     f"direct {gaps['direct']['under5'] * 100:.1f} %)")
        tt = (gaps["gateway"]["ttft"] or 0) - (gaps["direct"]["ttft"] or 0)
        goals.append(f"- added TTFT <= 1 ms (paced stub, 16 streams): {'met' if tt <= 1 else 'NOT met'} "
                     f"({tt:+.2f} ms)")
    report.append("\nGoals:\n" + "\n".join(goals))
    text = "\n".join(report)
    print("\n" + text)
    if args.write:
        Path(args.write).write_text(text + "\n")
    print(f"\nraw outputs: {work}")
    return 0


def soak(args: argparse.Namespace, work: Path, gw: ManagedServer, report: list[str]) -> int:
    assert gw.proc is not None
    pg = gw.proc.pid
    warm = run_load_proc(work, "soak-warm", gw.spec.base_url, rate=args.soak_rate, seconds=20, warmup=2,
                         users_distinct=10_000)
    rss0 = group_rss_mb(pg)
    t0 = time.monotonic()
    res = run_load_proc(work, "soak", gw.spec.base_url, rate=args.soak_rate, seconds=args.soak_seconds, warmup=0,
                        users_distinct=10_000)
    rss1 = group_rss_mb(pg)
    change = (rss1 - rss0) / rss0 * 100
    text = (f"soak: {args.soak_seconds:g} s at {args.soak_rate:g} req/s (open loop), 10,000 distinct users, after "
            f"{warm['ok']} warm-up requests; {res['ok']} ok, {res['errors']} errors; gateway RSS (all processes) "
            f"{rss0:.1f} MiB -> {rss1:.1f} MiB ({change:+.1f} %); goal flat within 5 %: "
            f"{'met' if abs(change) <= 5 else 'NOT met'}; wall {time.monotonic() - t0:.0f} s")
    print(text)
    if args.write:
        with open(args.write, "a") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
