"""The evaluation chain both DAGs share, described once as pod steps.

    stage weights -> serve (setup) -> quality, safety, latency -> stop (teardown)
                  -> gate_check per suite (against the champion's results as baseline)

Everything that names the version under test is an Airflow template, so the same
builder serves ``model_promotion`` (Params) and ``nightly_eval`` (a mapped task group
whose map index picks the target from the discovery task's list).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from evals.contract import EVAL_SUITES, JUDGE_API_KEY_ENV, SUITES, RunFolder, model_ref
from tollgate import constants as c
from tollgate.operators.base import execution_mode
from tollgate.operators.factory import pod_task
from tollgate.podspec import ModelVolume, PodStep, Resources, ResultsLocation, SecretEnv

S3_SECRET_NAME = "tollgate-s3"  # noqa: S105 - a Secret name, not a secret; Kubernetes Secret with the S3 credentials (keys: access-key-id, secret-access-key)
JUDGE_SECRET_NAME = "tollgate-judge"  # noqa: S105 - a Secret name; optional: API key of an external judge endpoint


@dataclass(frozen=True)
class EvalSettings:
    """Knobs of one evaluation, from the environment so the embedded default can shrink them."""

    thresholds_dir: str
    limit: str
    concurrent_users: str
    duration_s: str

    @classmethod
    def from_env(cls) -> EvalSettings:
        from tollgate import settings

        env = settings.current()
        return cls(thresholds_dir=env.thresholds_dir, limit=str(env.eval_limit),
                   concurrent_users=str(env.bench_users), duration_s=f"{env.bench_duration_s:g}")


@dataclass(frozen=True)
class Subject:
    """Which version a chain evaluates; every field may be an Airflow template."""

    name: str
    version: str
    source: str  # s3://bucket/models/NAME/VERSION
    results_dir: str  # relative folder under /results for this run's files

    @property
    def in_pod(self) -> RunFolder:
        """The run folder as a pod sees it (under the results mount)."""
        return RunFolder(f"{c.RESULTS_MOUNT_PATH}/{self.results_dir}")

    @property
    def on_volume(self) -> RunFolder:
        """The run folder relative to the results volume (what ``ResultsLocation.on_volume`` takes)."""
        return RunFolder(self.results_dir)


def s3_env() -> tuple[dict[str, str], tuple[SecretEnv, ...]]:
    """Endpoint as plain env (it is no secret); credentials from the Secret (or the worker env, locally)."""
    env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
           if os.environ.get(k)}
    secrets = (
        SecretEnv("AWS_ACCESS_KEY_ID", secret=S3_SECRET_NAME, key="access-key-id", optional=True),
        SecretEnv("AWS_SECRET_ACCESS_KEY", secret=S3_SECRET_NAME, key="secret-access-key", optional=True),
    )
    return env, secrets


PRODUCTION_THRESHOLDS = "thresholds"


def judge_env() -> dict[str, str]:
    """The independent judge (endpoint, model) for the quality pods; its key comes from the Secret.

    Unset: the pods record the judge metrics as "not judged" (the candidate never judges itself).
    """
    from tollgate import settings

    pod = settings.evals_settings()
    pairs = {"TOLLGATE_JUDGE_ENDPOINT": pod.judge_endpoint, "TOLLGATE_JUDGE_MODEL": pod.judge_model}
    return {k: v for k, v in pairs.items() if v}


def production_verdict(thresholds_dir: str, suite: str) -> tuple[str, ...]:
    """Also judge the evidence with production's gates (shown beside the deciding verdict)."""
    if thresholds_dir.rstrip("/") in (PRODUCTION_THRESHOLDS, f"./{PRODUCTION_THRESHOLDS}"):
        return ()
    return ("--production-threshold-file", f"{PRODUCTION_THRESHOLDS}/{suite}.yaml")


def build_evaluation(subject: Subject, *, prefix: str = "", settings: EvalSettings | None = None) -> dict[str, object]:
    """Create the chain's tasks in the current DAG (or task group); return them by role.

    The caller writes the version's prompt set to ``RunFolder.prompts`` before the
    evaluations run (the ``materialize_prompts`` task of ``tollgate.tasks``).

    ``prefix`` is the task-group id the tasks live in ("" at DAG level): templates that
    pull the endpoint need the full task id.
    """
    from tollgate.serving import ModelServer, serve_model, stop_model  # only the DAGs that serve pay for it

    settings = settings or EvalSettings.from_env()
    ref = model_ref(subject.name, subject.version)
    pod, volume = subject.in_pod, subject.on_volume
    s3_plain, s3_secrets = s3_env()
    # Evaluations are HTTP clients of the model server: CPU and memory, no GPU (only serving has one).
    client = Resources(cpu="2", memory="4Gi")
    # The run folder: on the claim locally; in kubernetes mode the pods pull/push it via S3
    # (evals.handoff) and mount no claim at all; only staging (writes) and serving (reads) do.
    reads = ModelVolume.for_reading() if execution_mode() is c.ExecutionMode.LOCAL else None
    folder = subject.results_dir

    stage = pod_task(PodStep(
        name="stage-weights",
        command=("python", "-m", "evals.stage"),
        args=("--source", subject.source, "--dest", c.MODEL_MOUNT_PATH),
        env=s3_plain, secret_env=s3_secrets,
        resources=Resources(cpu="2", memory="4Gi"),
        volume=ModelVolume.for_staging(),
    ), task_id="stage_weights", retries=2)

    server = ModelServer(model_name=subject.name, model_version=subject.version)
    serve = serve_model(server, task_id="serve_model")
    serve_id = f"{prefix}serve_model"
    endpoint = "{{ ti.xcom_pull(task_ids='" + serve_id + "') }}/v1"

    evals = {}
    limit = ("--limit", settings.limit) if settings.limit not in ("", "0") else ()
    for suite in EVAL_SUITES:
        evals[suite] = pod_task(PodStep(
            name=f"eval-{suite}",
            command=("python", "-m", "evals.run"),
            args=("--model", ref, "--suite", suite, "--endpoint", endpoint, *limit,
                  *(("--prompts", pod.prompts) if suite == "quality" else ()),
                  "--output", pod.results(suite)),
            env={"RAGAS_DO_NOT_TRACK": "true", **s3_plain, **judge_env()},
            secret_env=(SecretEnv(JUDGE_API_KEY_ENV, secret=JUDGE_SECRET_NAME, key="api-key", optional=True),
                        *s3_secrets),
            resources=client, handoff=folder, volume=reads,
            results=ResultsLocation.on_volume(volume.results(suite)),
        ), task_id=f"eval_{suite}", retries=1)
    evals["latency"] = pod_task(PodStep(
        name="benchmark-latency",
        command=("python", "-m", "evals.benchmark"),
        args=("--model", ref, "--endpoint", endpoint, "--concurrent-users", settings.concurrent_users,
              "--duration", settings.duration_s, "--output", pod.results("latency")),
        env=s3_plain, secret_env=s3_secrets,
        resources=Resources(cpu="4", memory="4Gi"), handoff=folder, volume=reads,
        results=ResultsLocation.on_volume(volume.results("latency")),
    ), task_id="benchmark_latency", retries=1)

    stop = stop_model(server, serve_task=serve, task_id="stop_model")

    gates = {}
    for suite in SUITES:
        gates[suite] = pod_task(PodStep(
            name=f"gate-{suite}",
            command=("python", "-m", "evals.gate_check"),
            args=("--results", pod.results(suite),
                  "--threshold-file", f"{settings.thresholds_dir}/{suite}.yaml",
                  *production_verdict(settings.thresholds_dir, suite),
                  "--baseline", pod.baseline(suite),
                  "--output", pod.verdict(suite),
                  "--report", pod.report(suite)),
            env=s3_plain, secret_env=s3_secrets,
            resources=Resources(cpu="500m", memory="512Mi"), handoff=folder, volume=reads,
            results=ResultsLocation.on_volume(volume.verdict(suite)),
        ), task_id=f"gate_{suite}")

    stage >> serve >> list(evals.values()) >> stop
    for suite in SUITES:
        evals[suite] >> gates[suite]
    return {"stage": stage, "serve": serve, "evals": evals, "stop": stop, "gates": gates}
