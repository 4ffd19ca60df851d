"""Every pod of every product DAG, rendered as the kubernetes backend would send it.

The DAG files in dags/ are parsed with TOLLGATE_EXECUTION=kubernetes and each
KubernetesPodOperator renders its V1Pod with build_pod_request_obj(dry_run=True):
no cluster needed. The invariants hold for any step a DAG author adds.
"""

from __future__ import annotations

import json

import pytest
from kubernetes.client import ApiClient

from tests.plugins.conftest import REPO_ROOT
from tollgate import constants as c

CREDENTIAL_WORDS = ("SECRET", "PASSWORD", "TOKEN", "API_KEY", "ACCESS_KEY", "PRIVATE_KEY", "CREDENTIAL")


def parse_dags(mode: str):
    from airflow.dag_processing.dagbag import DagBag

    mp = pytest.MonkeyPatch()
    mp.setenv(c.EXECUTION_ENV, mode)
    mp.setenv(c.K8S_NAMESPACE_ENV, "tollgate")
    try:
        return DagBag(dag_folder=str(REPO_ROOT / "dags"))
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def kubernetes_dagbag():
    return parse_dags("kubernetes")


def graph(dag) -> dict[str, tuple]:
    return {t.task_id: (frozenset(t.upstream_task_ids), t.is_setup, t.is_teardown, t.trigger_rule)
            for t in dag.tasks}


def test_same_graph_in_both_modes(kubernetes_dagbag):
    local = parse_dags("local")
    assert local.import_errors == {}
    assert set(local.dags) == set(kubernetes_dagbag.dags)
    assert pod_tasks(local) == [], "local mode must not need a cluster"
    for dag_id, dag in local.dags.items():
        assert graph(dag) == graph(kubernetes_dagbag.dags[dag_id]), dag_id


def pod_tasks(bag):
    """(dag_id, the KubernetesPodOperator each pod task builds when it runs)."""
    from tollgate.operators.kubernetes import KubernetesStepOperator

    return [(dag_id, task.pod_operator()) for dag_id, dag in sorted(bag.dags.items()) for task in dag.tasks
            if isinstance(task, KubernetesStepOperator)]


def test_dags_parse_in_kubernetes_mode(kubernetes_dagbag):
    assert kubernetes_dagbag.import_errors == {}
    assert kubernetes_dagbag.dags, "dags/ has no DAGs"
    assert pod_tasks(kubernetes_dagbag), "no pod steps rendered as KubernetesPodOperator"


def test_every_pod_of_every_dag_is_locked_down(kubernetes_dagbag):
    checked = 0
    for dag_id, task in pod_tasks(kubernetes_dagbag):
        where = f"{dag_id}.{task.task_id}"
        pod = task.build_pod_request_obj(dry_run=True)
        assert len(pod.spec.containers) == 1, f"{where}: no sidecars (results are files, not XCom)"
        ctr = pod.spec.containers[0]
        psc, csc = pod.spec.security_context, ctr.security_context
        assert psc and psc.run_as_non_root is True and (psc.run_as_user or 0) > 0, where
        assert csc and csc.read_only_root_filesystem is True, where
        assert csc.allow_privilege_escalation is False and csc.privileged is False, where
        assert csc.capabilities and csc.capabilities.drop == ["ALL"] and not csc.capabilities.add, where
        assert not pod.spec.host_network, where
        assert task.on_finish_action.value == "delete_succeeded_pod", where
        assert task.do_xcom_push is False, where
        assert task.startup_timeout_seconds >= 900 and task.schedule_timeout_seconds >= 900, where

        mounts = {m.mount_path: m for m in ctr.volume_mounts or []}
        assert c.TMP_MOUNT_PATH in mounts, f"{where}: read-only root needs a writable /tmp"
        argv = " ".join([*(ctr.command or []), *(ctr.args or [])])
        if c.MODEL_MOUNT_PATH in mounts:
            staging = "evals.stage" in argv
            assert mounts[c.MODEL_MOUNT_PATH].read_only is (not staging), (
                f"{where}: /models must be read-write only for staging")

        for env in ctr.env or []:
            if env.value_from is not None:
                assert env.value_from.secret_key_ref is not None or env.value_from.field_ref is not None, where
                continue
            if any(word in env.name.upper() for word in CREDENTIAL_WORDS):
                raise AssertionError(f"{where}: {env.name} is a credential in plain env")
        assert not ctr.env_from, f"{where}: envFrom would hide which secrets a step reads"

        res = ctr.resources
        gpu_req = (res.requests or {}).get(c.GPU_RESOURCE)
        assert gpu_req == (res.limits or {}).get(c.GPU_RESOURCE), f"{where}: GPU request must equal limit"
        assert (res.requests or {}).get("memory") and (res.limits or {}).get("memory"), where
        json.dumps(ApiClient().sanitize_for_serialization(pod))  # a valid, serialisable pod
        checked += 1
    assert checked > 0
