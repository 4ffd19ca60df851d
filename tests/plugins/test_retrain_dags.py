"""drift_monitor and retrain as parsed: schedule, Params, the graph, and the training pod on Kubernetes."""

from __future__ import annotations

import pytest

from tests.plugins.conftest import REPO_ROOT
from tollgate import constants as c


def parse(mode: str, **env: str):
    from airflow.dag_processing.dagbag import DagBag

    mp = pytest.MonkeyPatch()
    mp.setenv(c.EXECUTION_ENV, mode)
    for key, value in env.items():
        mp.setenv(key, value)
    try:
        bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    finally:
        mp.undo()
    assert bag.import_errors == {}
    return bag


@pytest.fixture(scope="module")
def local():
    return parse("local")


def test_drift_monitor_is_hourly_with_a_24h_cooldown(local) -> None:
    dag = local.dags["drift_monitor"]
    assert dag.schedule == "@hourly" and dag.max_active_runs == 1 and dag.catchup is False
    defaults = {k: dag.params[k] for k in dag.params}
    assert defaults["cooldown_hours"] == 24 and defaults["window_hours"] == 1 and defaults["reference_hours"] == 24
    up = lambda tid: dag.get_task(tid).get_flat_relative_ids(upstream=True)  # noqa: E731
    assert {"drift", "record", "decide"} <= up("trigger_retrain")
    assert dag.get_task("record").trigger_rule == "all_done", "a drift (exit 1) is still recorded and decided"
    assert dag.get_task("trigger_retrain").trigger_dag_id == "retrain"


def test_retrain_trains_then_publishes_registers_and_asks_for_staging(local) -> None:
    dag = local.dags["retrain"]
    assert dag.schedule is None and dag.max_active_runs == 1
    up = lambda tid: dag.get_task(tid).get_flat_relative_ids(upstream=True)  # noqa: E731
    assert {"build_trainset", "stage_parent", "train", "publish", "register"} <= up("trigger_promotion")
    trigger = dag.get_task("trigger_promotion")
    assert trigger.trigger_dag_id == "model_promotion" and trigger.conf["target_env"] == "staging"
    assert dag.get_task("train").interpreter == "serve", "the embedded fine-tune runs in .venv-serve"


def test_the_training_pod_gets_its_gpus_and_tolerations_from_configuration() -> None:
    bag = parse("kubernetes", TOLLGATE_TRAIN_GPUS="2", TOLLGATE_TRAIN_MEMORY="24Gi",
                TOLLGATE_TRAIN_TOLERATIONS="nvidia.com/gpu:NoSchedule,pool=train:NoExecute",
                TOLLGATE_TRAIN_NODE_SELECTOR="gpu=a100", TOLLGATE_TRAIN_IMAGE="registry.local/train:1")
    pod = bag.dags["retrain"].get_task("train").pod_operator().build_pod_request_obj(dry_run=True)
    ctr = pod.spec.containers[0]
    assert ctr.image == "registry.local/train:1"
    assert ctr.resources.limits[c.GPU_RESOURCE] == "2" and ctr.resources.limits["memory"] == "24Gi"
    tolerations = {(t.key, t.operator, t.value, t.effect) for t in pod.spec.tolerations}
    assert tolerations == {("nvidia.com/gpu", "Exists", None, "NoSchedule"), ("pool", "Equal", "train", "NoExecute")}
    assert pod.spec.node_selector == {"gpu": "a100"}
