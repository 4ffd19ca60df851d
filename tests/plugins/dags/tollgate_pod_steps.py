"""A small DAG shaped like the real pipeline, for the plugin tests (not a product DAG).

stage-weights -> serve_model (setup) -> eval-quality -> stop_model (teardown)
                                           \\-> gate-check

The steps are `python -c` stand-ins for evals.* with the same contract: they
read TOLLGATE_ENDPOINT, write a results JSON to TOLLGATE_RESULTS on the model
volume and exit 0 pass / 1 check failed / 2 bad input. The same DAG runs on the
local backend (real subprocesses) and on kubernetes (pods against kmock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk import DAG, BaseOperator, Param

from tollgate.operators import KubernetesTarget, execution_mode, pod_task
from tollgate.podspec import ModelVolume, PodStep, Resources, ResultsLocation, Toleration
from tollgate.serving import ModelServer, endpoint_env, serve_model, stop_model

STAGE = (
    "import json, os, sys; d = sys.argv[1]; os.makedirs(d, exist_ok=True); "
    "json.dump({'architectures': ['LlamaForCausalLM']}, open(os.path.join(d, 'config.json'), 'w')); "
    "open(os.path.join(d, 'health'), 'w').write('ok'); print('staged', d)"
)
EVAL = (
    "import json, os, sys, urllib.request; ep = os.environ['TOLLGATE_ENDPOINT']; "
    "ok = urllib.request.urlopen(ep + '/health', timeout=10).status == 200; "
    "out = os.environ['TOLLGATE_RESULTS']; os.makedirs(os.path.dirname(out), exist_ok=True); "
    "json.dump({'metrics': {'quality_score': 0.9 if ok else 0.0}, 'meta': {'endpoint': ep, 'suite': sys.argv[1]}}, "
    "open(out, 'w')); print('evaluated', sys.argv[1], 'against', ep); sys.exit(int(os.environ['EVAL_EXIT']))"
)
GATE = (
    "import json, sys; r = json.load(open(sys.argv[1])); s = r['metrics']['quality_score']; "
    "bound = float(sys.argv[2]); print('quality_score', s, 'min', bound); sys.exit(0 if s >= bound else 1)"
)

SERVER = ModelServer(
    model_name="{{ params.model_name }}",
    model_version="{{ params.model_version }}",
    resources=Resources(cpu="1", memory="2Gi"),
    tolerations=(),
)


def build_dag(
    dag_id: str = "tollgate_pod_steps",
    *,
    execution: str | None = None,
    target: KubernetesTarget | None = None,
    serve_factory: Callable[..., BaseOperator] | None = None,
    **pod_kwargs: Any,
) -> DAG:
    mode = execution_mode(execution).value
    serve_kwargs: dict[str, Any] = {"poll_interval_s": 0.2} if mode == "kubernetes" else {}
    with DAG(
        dag_id=dag_id,
        schedule=None,
        catchup=False,
        params={
            "model_name": Param("orders", type="string", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"),
            "model_version": Param("2", type="string"),
            "min_quality": Param(0.5, type="number"),
            "eval_exit": Param(0, type="integer"),  # lets a test make the eval step fail
        },
        tags=["tollgate", "test"],
    ) as dag:
        stage = pod_task(PodStep(
            name="stage-weights",
            command=("python", "-c", STAGE),
            args=("/models/{{ params.model_name }}/{{ params.model_version }}",),
            volume=ModelVolume.for_staging(),
        ), execution=mode, target=target, **pod_kwargs)
        if serve_factory is not None:
            serve = serve_factory(SERVER)
        else:
            serve = serve_model(SERVER, execution=mode, target=target, **serve_kwargs)
        quality = pod_task(PodStep(
            name="eval-quality",
            command=("python", "-c", EVAL),
            args=("quality",),
            env={**endpoint_env(serve.task_id), "EVAL_EXIT": "{{ params.eval_exit }}"},
            resources=Resources(cpu="2", memory="4Gi", gpu=1),
            tolerations=(Toleration.gpu(),),
            volume=ModelVolume.for_reading(),
            results=ResultsLocation.on_volume("{{ run_id | replace(':', '-') | replace('+', '-') }}/quality.json"),
        ), execution=mode, target=target, **pod_kwargs)
        gate = pod_task(PodStep(
            name="gate-check",
            command=("python", "-c", GATE),
            args=("/results/{{ run_id | replace(':', '-') | replace('+', '-') }}/quality.json",
                  "{{ params.min_quality }}"),
            volume=ModelVolume.for_reading(),
        ), execution=mode, target=target, **pod_kwargs)
        stop = stop_model(SERVER, serve_task=serve, execution=mode, target=target)
        stage >> serve >> quality >> [gate, stop]
    return dag


dag = build_dag()
