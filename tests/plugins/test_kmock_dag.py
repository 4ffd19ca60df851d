"""One DAG's KubernetesPodOperator tasks, run for real through dag.test() against kmock.

The Kubernetes API is kmock's emulator on 127.0.0.1 plus the shim in
kmock_cluster.py; the operator, the kubernetes client and Airflow are the real
ones. Pods do not execute (kmock has no kubelet): the shim moves them through
their phases and gives each step the exit code a test asks for.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.contract import EXIT_BAD_INPUT, EXIT_FAIL
from tests.plugins.airflow_run import run_dag_test, task_states, xcom
from tests.plugins.dags.tollgate_pod_steps import build_dag
from tests.plugins.kmock_cluster import STEP_LABEL, KmockCluster
from tollgate import constants as c
from tollgate.operators import KubernetesTarget
from tollgate.serving.base import run_scope

NAMESPACE = "tollgate-test"
FAST_POLLING = {"startup_check_interval_seconds": 1, "base_container_status_polling_interval": 0.2}


def run_dag(cluster: KmockCluster, dag_id: str, **conf):
    target = KubernetesTarget(namespace=NAMESPACE, conn_id=None, config_file=str(cluster.kubeconfig))
    dag = build_dag(dag_id, execution="kubernetes", target=target, **FAST_POLLING)
    return run_dag_test(dag, run_conf=conf or None)


def pods_by_step(cluster: KmockCluster) -> dict[str, tuple[dict, bool]]:
    return {pod["metadata"]["labels"][STEP_LABEL]: (pod, deleted) for pod, deleted in cluster.objects("v1/pods")}


@pytest.mark.usefixtures("airflow_db")
def test_pod_steps_run_end_to_end_against_a_kubernetes_api(tmp_path: Path):
    with KmockCluster(tmp_path) as cluster:
        dag_run = run_dag(cluster, "kmock_pass")
        pods = pods_by_step(cluster)
        deployments = cluster.objects("apps/v1/deployments")
        services = cluster.objects("v1/services")

    assert str(dag_run.state) in ("success", "DagRunState.SUCCESS"), task_states(dag_run)
    assert task_states(dag_run) == dict.fromkeys(
        ["stage-weights", "serve_model", "eval-quality", "gate-check", "stop_model"], "success")

    # Every step became a pod with the spec the cluster should get, and was deleted on success.
    assert set(pods) == {"stage-weights", "eval-quality", "gate-check"}
    for step, (pod, deleted) in pods.items():
        assert deleted, f"succeeded pod {step} must be deleted"
        assert pod["status"]["phase"] == "Succeeded"
        assert pod["metadata"]["namespace"] == NAMESPACE
        ctr = pod["spec"]["containers"][0]
        assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
        assert ctr["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert len(pod["spec"]["containers"]) == 1  # no XCom sidecar

    stage = pods["stage-weights"][0]["spec"]["containers"][0]
    assert stage["args"] == ["/models/orders/2"]  # params rendered
    assert {m["mountPath"]: m.get("readOnly", False) for m in stage["volumeMounts"]}["/models"] is False
    quality = pods["eval-quality"][0]["spec"]["containers"][0]
    assert {m["mountPath"]: m.get("readOnly", False) for m in quality["volumeMounts"]}["/models"] is True
    assert quality["resources"]["requests"][c.GPU_RESOURCE] == "1"
    env = {e["name"]: e.get("value") for e in quality["env"]}
    server_name = f"vllm-orders-2-{run_scope('kmock_pass', dag_run.run_id)}"  # scoped to this run
    endpoint = f"http://{server_name}.{NAMESPACE}.svc.cluster.local:{c.VLLM_PORT}"
    assert env[c.ENDPOINT_ENV] == endpoint  # the serve task's XCom, templated into the pod
    assert env["OPENAI_BASE_URL"] == endpoint + "/v1"
    assert xcom(dag_run, "serve_model") == endpoint
    assert xcom(dag_run, "eval-quality", c.XCOM_EXIT_CODE) == 0
    results = xcom(dag_run, "eval-quality", c.XCOM_RESULTS)  # rendered, as the pod saw it
    assert results.startswith("/results/manual__") and results.endswith("/quality.json") and "{{" not in results
    assert env[c.RESULTS_ENV] == results

    # The model server: created from the infra template, and deleted by the teardown.
    [(deployment, dep_deleted)] = deployments
    [(service, svc_deleted)] = services
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == server_name
    served = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert served[served.index("--served-model-name") + 1] == "orders:2"
    assert dep_deleted and svc_deleted


@pytest.mark.usefixtures("airflow_db")
def test_a_failed_gate_fails_its_task_keeps_its_pod_and_still_tears_down(tmp_path: Path):
    with KmockCluster(tmp_path, exit_codes={"gate-check": EXIT_FAIL}) as cluster:
        dag_run = run_dag(cluster, "kmock_gate_fails")
        pods = pods_by_step(cluster)
        deployments = cluster.objects("apps/v1/deployments")

    states = task_states(dag_run)
    assert states["gate-check"] == "failed"
    assert states["eval-quality"] == "success" and states["stop_model"] == "success"
    assert "failed" in str(dag_run.state).lower()
    assert xcom(dag_run, "gate-check", c.XCOM_EXIT_CODE) == 1  # a judged "no", not a broken cluster
    gate_pod, gate_deleted = pods["gate-check"]
    assert not gate_deleted, "a failed pod stays for kubectl logs/describe"
    assert gate_pod["status"]["phase"] == "Failed"
    assert pods["eval-quality"][1] is True
    assert all(deleted for _, deleted in deployments)  # teardown ran although a step failed


@pytest.mark.usefixtures("airflow_db")
def test_bad_input_is_told_apart_from_a_failed_check(tmp_path: Path):
    with KmockCluster(tmp_path, exit_codes={"stage-weights": EXIT_BAD_INPUT}) as cluster:
        dag_run = run_dag(cluster, "kmock_bad_input")
        deployments = cluster.objects("apps/v1/deployments")
    states = task_states(dag_run)
    assert states["stage-weights"] == "failed"
    assert xcom(dag_run, "stage-weights", c.XCOM_EXIT_CODE) == 2
    assert states["eval-quality"] == "upstream_failed"
    assert deployments == []  # nothing was served for a model that never staged


def test_model_server_that_never_gets_ready_fails_the_setup_in_time(tmp_path: Path):
    from airflow.sdk.exceptions import AirflowException

    from tollgate.podspec import Resources
    from tollgate.serving import ModelServer
    from tollgate.serving.kubernetes import KubernetesServeModelOperator, KubernetesStopModelOperator

    server = ModelServer(model_name="orders", model_version="7", ready_timeout_s=1.5,
                         resources=Resources(cpu="1", memory="1Gi"))
    with KmockCluster(tmp_path, deployments_become_ready=False) as cluster:
        target = KubernetesTarget(namespace=NAMESPACE, conn_id=None, config_file=str(cluster.kubeconfig))
        serve = KubernetesServeModelOperator(task_id="serve_model", server=server, target=target, poll_interval_s=0.2)
        with pytest.raises(AirflowException, match="0/1 replicas ready after 2 s"):
            serve.execute({})
        # A retried setup finds its own Deployment (409) instead of failing or starting a second one.
        with pytest.raises(AirflowException, match="replicas ready"):
            serve.execute({})
        assert len(cluster.objects("apps/v1/deployments")) == 1
        KubernetesStopModelOperator(task_id="stop_model", server=server, target=target).execute({})
        KubernetesStopModelOperator(task_id="stop_model", server=server, target=target).execute({})  # idempotent
        assert [deleted for _, deleted in cluster.objects("apps/v1/deployments")] == [True]
        assert [deleted for _, deleted in cluster.objects("v1/services")] == [True]
