"""retrain: fine-tune a challenger on production traffic and send it to staging.

Triggered by drift_monitor (conf: model_name, drift_run_id, reason) or by hand. Builds a
training set from the champion's request logs (positive feedback or a reference answer,
safety-filtered, deduplicated; a held-out slice becomes a versioned quality dataset),
stages the champion's weights, runs a LoRA fine-tune (a GPU pod on Kubernetes, a CPU
process on the embedded default), publishes the merged weights to S3 with a manifest,
registers the new version with its lineage (parent, dataset hash, drift run, training
run and loss curve), and triggers model_promotion with target_env=staging for it.
Nothing is promoted here: the promotion's gates and its approver decide.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# Named for the dag-processor, which imports a file's airflow.* modules once, before it forks the
# parsing child ([dag_processor] parsing_pre_import_modules): Airflow's TaskFlow machinery
# (which `task` loads on first use) is then loaded once, not in every parse of this file.
import airflow.sdk.definitions.decorators  # noqa: F401
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param, task

from evals.contract import MODEL_NAME_PATTERN
from tollgate import constants as c
from tollgate import promotion as p
from tollgate import settings
from tollgate.operators.factory import pod_task
from tollgate.pipeline import s3_env
from tollgate.podspec import ModelVolume, PodStep, Resources, Toleration

DAG_ID = "retrain"
SETTINGS = settings.current()
PLAN = "{{ ti.xcom_pull(task_ids='plan') }}"
NAME = "{{ params.model_name }}"
FOLDER = "{{ ti.xcom_pull(task_ids='plan')['folder'] }}"
IN_POD = f"{c.RESULTS_MOUNT_PATH}/{FOLDER}"


def _plan(key: str) -> str:
    return "{{ ti.xcom_pull(task_ids='plan')['" + key + "'] }}"


def _tolerations() -> tuple[Toleration, ...]:
    """TOLLGATE_TRAIN_TOLERATIONS entries, `key[=value][:effect]`."""
    out = []
    for entry in SETTINGS.train_tolerations:
        spec, _, effect = entry.partition(":")
        key, _, value = spec.partition("=")
        out.append(Toleration(key=key, operator="Equal" if value else "Exists", value=value or None,
                              effect=effect or None))
    return tuple(out)


with DAG(
    dag_id=DAG_ID,
    description="Fine-tune a challenger on production traffic, register it, send it to staging",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # the next version number is claimed by the run that publishes it
    tags=["tollgate", "retraining"],
    default_args={"owner": "ml-platform", "retries": 0, "retry_delay": timedelta(seconds=30)},
    params={
        "model_name": Param("smollm2-orders", type="string", pattern=MODEL_NAME_PATTERN,
                            description="Registered model whose champion is fine-tuned"),
        "drift_run_id": Param("", type="string", description="MLflow run of the drift report that asked for this"),
        "reason": Param("", type="string", description="why (the drift monitor writes the failed gates)"),
        "window_hours": Param(168, type="number", exclusiveMinimum=0, description="hours of traffic to learn from"),
        "max_examples": Param(400, type="integer", minimum=1),
        "min_examples": Param(20, type="integer", minimum=1, description="fewer usable pairs fail the run"),
        "eval_fraction": Param(0.2, type="number", minimum=0, maximum=0.5),
        "max_steps": Param(60, type="integer", minimum=1),
        "batch_size": Param(8, type="integer", minimum=1),
        "learning_rate": Param(2e-4, type="number", exclusiveMinimum=0),
        "lora_r": Param(8, type="integer", minimum=1),
    },
    render_template_as_native_obj=False,
    doc_md=__doc__,
) as dag:

    @task
    def plan(params: dict | None = None, run_id: str | None = None) -> dict:
        from datetime import UTC

        from tollgate import retrain

        model = params["model_name"]
        out = retrain.plan_retrain(model, datetime.now(UTC), window_hours=float(params["window_hours"]),
                                   bucket=settings.evals_settings().s3_bucket,
                                   log_source=settings.current().request_log_source(model))
        out["folder"] = p.run_folder(DAG_ID, run_id or "manual", model, out["model_version"])
        print(f"fine-tune {model}:{out['parent_version']} on {out['logs']} [{out['start']}, {out['end']}) "
              f"-> {model}:{out['model_version']} at {out['dest']}; reason: {params['reason'] or 'by hand'}")
        return out

    s3_plain, s3_secrets = s3_env()
    reads = ModelVolume.for_reading() if SETTINGS.execution == c.ExecutionMode.LOCAL.value else None
    handoff = {"handoff": FOLDER, "volume": reads}

    trainset = pod_task(PodStep(
        name="build-trainset", command=("python", "-m", "evals.trainset"),
        args=("--logs", _plan("logs"), "--start", _plan("start"), "--end", _plan("end"),
              "--output-dir", f"{IN_POD}/dataset", "--publish", _plan("datasets"),
              "--max-examples", "{{ params.max_examples }}", "--min-examples", "{{ params.min_examples }}",
              "--eval-fraction", "{{ params.eval_fraction }}"),
        env=s3_plain, secret_env=s3_secrets, resources=Resources(cpu="1", memory="2Gi"), **handoff,
    ), task_id="build_trainset")

    stage_parent = pod_task(PodStep(
        name="stage-parent", command=("python", "-m", "evals.stage"),
        args=("--source", _plan("parent_source"), "--dest", c.MODEL_MOUNT_PATH),
        env=s3_plain, secret_env=s3_secrets,
        resources=Resources(cpu="2", memory="4Gi"), volume=ModelVolume.for_staging(),
    ), task_id="stage_parent", retries=2)

    parent_dir = f"{c.MODEL_MOUNT_PATH}/{NAME}/{_plan('parent_version')}"
    train = pod_task(PodStep(
        name="train", command=("python", "-m", "evals.train"),
        args=("--base", parent_dir, "--train", f"{IN_POD}/dataset/train.jsonl",
              "--eval", f"{IN_POD}/dataset/eval.jsonl", "--output", f"{IN_POD}/model",
              "--metrics", f"{IN_POD}/train.json", "--model", f"{NAME}:{_plan('model_version')}",
              "--max-steps", "{{ params.max_steps }}", "--batch-size", "{{ params.batch_size }}",
              "--learning-rate", "{{ params.learning_rate }}", "--lora-r", "{{ params.lora_r }}",
              "--threads", str(SETTINGS.train_threads)),
        image=SETTINGS.train_image,
        resources=Resources(cpu=SETTINGS.train_cpu, memory=SETTINGS.train_memory, gpu=SETTINGS.train_gpus),
        tolerations=_tolerations() if SETTINGS.train_gpus else (),
        node_selector=dict(e.split("=", 1) for e in SETTINGS.train_node_selector if "=" in e),
        handoff=FOLDER, volume=ModelVolume.for_reading(),
    ), task_id="train", interpreter="serve", execution_timeout=timedelta(hours=6))

    publish = pod_task(PodStep(
        name="publish-challenger", command=("python", "-m", "evals.publish"),
        args=("--source", f"{IN_POD}/model", "--dest", _plan("dest")),
        env=s3_plain, secret_env=s3_secrets, resources=Resources(cpu="2", memory="2Gi"), **handoff,
    ), task_id="publish", retries=2)

    @task
    def register(plan: dict, params: dict | None = None, run_id: str | None = None) -> dict:
        from tollgate import retrain
        from tollgate.resultstore import synced

        with synced(plan["folder"], pull=True) as folder:
            out = retrain.register_challenger(plan, dag_run_id=run_id or "manual", train_results=folder / "train.json",
                                              dataset=folder / "dataset" / "dataset.json",
                                              drift_run_id=params["drift_run_id"] or None)
            # The merged weights are in S3 now (verified by their manifest); the local copy goes.
            import shutil

            shutil.rmtree(folder / "model", ignore_errors=True)
        return out

    planned = plan()
    registered = register(planned)
    planned >> [trainset, stage_parent]
    [trainset, stage_parent] >> train >> publish >> registered

    TriggerDagRunOperator(
        task_id="trigger_promotion",
        trigger_dag_id="model_promotion",
        trigger_run_id="retrain__{{ params.model_name }}__{{ ti.xcom_pull(task_ids='register')['model_version'] }}"
                       "__{{ ts_nodash }}",
        conf={"model_name": "{{ params.model_name }}",
              "model_version": "{{ ti.xcom_pull(task_ids='register')['model_version'] }}",
              "target_env": "staging"},
        wait_for_completion=False,
    ).set_upstream(registered)
