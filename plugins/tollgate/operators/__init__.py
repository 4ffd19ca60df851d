"""Pod steps as Airflow tasks: ``pod_task(step)`` picks the backend (cosmos-style modes).

    from tollgate.operators import pod_task
    from tollgate.podspec import ModelVolume, PodStep, Resources, ResultsLocation, SecretEnv, Toleration
    from tollgate.serving import ModelServer, endpoint_env, serve_model, stop_model

    server = ModelServer(model_name="{{ params.model_name }}", model_version="{{ params.model_version }}")
    serve = serve_model(server)                         # setup: returns the endpoint via XCom
    quality = pod_task(PodStep(
        name="eval-quality",
        command=("python", "-m", "evals.run"),
        args=("--model", "{{ params.model_name }}:{{ params.model_version }}", "--suite", "quality",
              "--output", "/results/{{ run_id }}/quality.json"),
        env=endpoint_env(),                             # TOLLGATE_ENDPOINT / OPENAI_BASE_URL
        secret_env=(SecretEnv("OPENAI_API_KEY", secret="judge-llm", key="api-key"),),
        resources=Resources(cpu="2", memory="8Gi"),
        volume=ModelVolume.for_reading(),
        results=ResultsLocation.on_volume("{{ run_id }}/quality.json"),
    ), retries=1)
    stop = stop_model(server, serve_task=serve)         # teardown: runs even if evals fail
    serve >> quality >> stop

Outcome of a step (both backends): XCom ``exit_code`` (0 pass, 1 check failed, 2 bad
input; absent when the step never ran) and ``results`` (where its results file is).
Exit 1 and 2 fail the task with ``TollgateError`` (no retries); anything else is an
infrastructure failure and retries apply.

Backends live in ``local.py`` and ``kubernetes.py`` on the shared ``base.py``; they
are imported only when chosen, so a local DAG never loads the Kubernetes client.
"""

from tollgate.operators.base import KubernetesTarget, execution_mode, outcome_for_exit
from tollgate.operators.factory import pod_task

__all__ = ["KubernetesTarget", "execution_mode", "outcome_for_exit", "pod_task"]
