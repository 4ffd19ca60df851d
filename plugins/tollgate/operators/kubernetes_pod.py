"""The kubernetes backend's heavy half: a pod step as a real KubernetesPodOperator.

Imported only when a pod task executes (or a test renders a pod), never while a DAG
file is parsed: the cncf provider and the kubernetes client cost seconds to import.
``tollgate.operators.kubernetes.KubernetesStepOperator`` (light, what DAGs hold)
builds ``StepPodOperator`` here from its rendered fields and delegates to it.

Production settings, and why:

- startup and schedule timeouts of 900 s: a GPU node scale-up plus a multi-GB
  image pull takes minutes; the provider's 120 s default fails healthy runs;
- logs streamed into the task log (``get_logs``), events logged on failure;
- ``delete_succeeded_pod``: a failed pod stays for ``kubectl describe/logs``;
- ``reattach_on_restart``: a restarted worker picks up its running pod instead of
  starting a second eval on a second GPU;
- no XCom sidecar (apache/airflow#15761): results are files on the volume or in S3;
- the exit code of the step container is read from the pod status and published
  the same way as the local backend (see ``tollgate.operators.base``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator  # noqa: TID253 - this module is imported only when a pod task runs
from airflow.sdk.exceptions import AirflowException
from kubernetes.client import models as k8s  # noqa: TID253 - the k8s backend, imported only when a pod task runs

from evals.contract import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_PASS
from tollgate import constants as c
from tollgate.exceptions import TollgateError
from tollgate.operators.base import KubernetesTarget, publish_exit_code, raise_for_exit
from tollgate.podspec import PodStep

if TYPE_CHECKING:
    from airflow.sdk import Context

PRODUCTION_SETTINGS: dict[str, Any] = {
    "startup_timeout_seconds": c.STARTUP_TIMEOUT_S,
    "schedule_timeout_seconds": c.SCHEDULE_TIMEOUT_S,
    "get_logs": True,
    "log_events_on_failure": True,
    "on_finish_action": "delete_succeeded_pod",
    "reattach_on_restart": True,
    "image_pull_policy": "IfNotPresent",
    "termination_grace_period": 30,
}


# -- the pod pieces, one function each ------------------------------------------------------
def pod_env(step: PodStep) -> list[k8s.V1EnvVar]:
    """Plain env, then secrets as secretKeyRef (values never enter the pod spec)."""
    env = [k8s.V1EnvVar(name=k, value=v) for k, v in step.env.items()]
    env += [
        k8s.V1EnvVar(
            name=s.env,
            value_from=k8s.V1EnvVarSource(
                secret_key_ref=k8s.V1SecretKeySelector(name=s.secret, key=s.key, optional=s.optional or None)
            ),
        )
        for s in step.secret_env
    ]
    env.append(k8s.V1EnvVar(name=c.EXECUTION_ENV, value=c.ExecutionMode.KUBERNETES.value))
    # The root filesystem is read-only: caches (pip, HF, matplotlib) go to the /tmp emptyDir.
    env.append(k8s.V1EnvVar(name="HOME", value=c.TMP_MOUNT_PATH))
    if step.results is not None:
        env.append(k8s.V1EnvVar(name=c.RESULTS_ENV, value=step.results.pod_path))
    return env


def handoff_command(step: PodStep, prefix: str | None) -> list[str]:
    """The container command: the step's own, or wrapped in ``evals.handoff`` when its run folder travels via S3.

    ``evals.handoff`` pulls ``prefix`` into ``/results/<folder>`` (an emptyDir), runs the
    step, and pushes the files it wrote back to ``prefix``, keeping the step's exit code.
    """
    if not (step.handoff and prefix):
        return list(step.command)
    folder = f"{c.RESULTS_MOUNT_PATH}/{step.handoff.strip('/')}"
    return ["python", "-m", "evals.handoff", "--prefix", prefix.rstrip("/"), "--dir", folder, "--", *step.command]


def handoff_results_uri(step: PodStep, prefix: str | None) -> str | None:
    """Where the results file ends up: its S3 URL when the run folder travels via S3."""
    if step.results is None:
        return None
    uri = step.results.uri
    folder = f"{c.RESULTS_MOUNT_PATH}/{(step.handoff or '').strip('/')}/"
    if step.handoff and prefix and uri.startswith(folder):
        return f"{prefix.rstrip('/')}/{uri[len(folder):]}"
    return uri


def pod_resources(step: PodStep) -> k8s.V1ResourceRequirements:
    return k8s.V1ResourceRequirements(requests=step.resources.requests(), limits=step.resources.limits())


def pod_volumes(step: PodStep, handoff: bool = False) -> tuple[list[k8s.V1Volume], list[k8s.V1VolumeMount]]:
    """/tmp always; /results an emptyDir when the run folder travels via S3; the model claim if the step has it."""
    volumes = [
        k8s.V1Volume(name=c.TMP_VOLUME_NAME, empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=c.TMP_SIZE_LIMIT))
    ]
    mounts = [k8s.V1VolumeMount(name=c.TMP_VOLUME_NAME, mount_path=c.TMP_MOUNT_PATH)]
    if handoff:
        volumes.append(k8s.V1Volume(name=c.RESULTS_VOLUME_NAME,
                                    empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=c.TMP_SIZE_LIMIT)))
        mounts.append(k8s.V1VolumeMount(name=c.RESULTS_VOLUME_NAME, mount_path=c.RESULTS_MOUNT_PATH))
    if step.volume is None:
        return volumes, mounts
    writes_results = step.results is not None and step.results.on_shared_volume and not handoff
    # One claim, two mounts: weights read-only (unless staging), results/ writable when
    # the step writes its verdict there. The claim itself is read-only if nothing writes.
    claim_read_only = step.volume.read_only and not writes_results
    volumes.append(
        k8s.V1Volume(
            name=c.VOLUME_NAME,
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                claim_name=step.volume.claim, read_only=claim_read_only
            ),
        )
    )
    mounts.append(
        k8s.V1VolumeMount(name=c.VOLUME_NAME, mount_path=step.volume.mount_path, read_only=step.volume.read_only)
    )
    if writes_results:
        mounts.append(
            k8s.V1VolumeMount(
                name=c.VOLUME_NAME, mount_path=c.RESULTS_MOUNT_PATH, sub_path=c.RESULTS_SUBPATH, read_only=False
            )
        )
    return volumes, mounts


def pod_security_context() -> k8s.V1PodSecurityContext:
    return k8s.V1PodSecurityContext(
        run_as_non_root=True,
        run_as_user=c.RUN_AS_USER,
        run_as_group=c.RUN_AS_GROUP,
        fs_group=c.RUN_AS_GROUP,
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def container_security_context() -> k8s.V1SecurityContext:
    return k8s.V1SecurityContext(
        run_as_non_root=True,
        read_only_root_filesystem=True,
        allow_privilege_escalation=False,
        privileged=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
    )


def pod_tolerations(step: PodStep) -> list[k8s.V1Toleration]:
    return [k8s.V1Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect) for t in step.tolerations]


def pod_labels(step: PodStep) -> dict[str, str]:
    return {c.LABEL_PART_OF: c.PART_OF, c.LABEL_COMPONENT: "step", c.LABEL_STEP: step.name}


def container_exit_code(remote_pod: k8s.V1Pod | None, container_name: str) -> int | None:
    """The terminated exit code of the step container, if the pod got that far."""
    statuses = (remote_pod.status.container_statuses if remote_pod and remote_pod.status else None) or []
    for status in statuses:
        if status.name == container_name and status.state and status.state.terminated:
            return int(status.state.terminated.exit_code)
    return None


class StepPodOperator(KubernetesPodOperator):
    """KubernetesPodOperator for one (rendered) ``PodStep``, with Tollgate's production settings."""

    template_fields = (*KubernetesPodOperator.template_fields, "results_uri")
    ui_color = "#e3ecfa"

    def __init__(self, *, step: PodStep, target: KubernetesTarget | None = None, handoff_prefix: str | None = None,
                 service_account: str | None = None, **kwargs: Any) -> None:
        if kwargs.get("do_xcom_push"):
            raise TollgateError("pod steps return results as files (volume or S3), not through an XCom sidecar")
        target = target or KubernetesTarget.from_env()
        handoff = bool(step.handoff and handoff_prefix)
        volumes, mounts = pod_volumes(step, handoff=handoff)
        settings = {**PRODUCTION_SETTINGS, **kwargs, "do_xcom_push": False}
        super().__init__(
            namespace=target.namespace,
            kubernetes_conn_id=target.conn_id,
            in_cluster=target.in_cluster,
            config_file=target.config_file,
            cluster_context=target.cluster_context,
            name=step.name,
            image=step.image,
            cmds=handoff_command(step, handoff_prefix),
            arguments=list(step.args),
            env_vars=pod_env(step),
            container_resources=pod_resources(step),
            volumes=volumes,
            volume_mounts=mounts,
            node_selector=dict(step.node_selector) or None,
            tolerations=pod_tolerations(step) or None,
            # Every step runs as the steps' ServiceAccount (infra/k8s/base/rbac.yaml: no Role bound);
            # only steps that name their own (canary checks) get an API token.
            service_account_name=step.service_account or service_account,
            automount_service_account_token=step.service_account is not None,
            security_context=pod_security_context(),
            container_security_context=container_security_context(),
            labels=pod_labels(step),
            **settings,
        )
        self.step = step
        self.target = target
        # Where the step's verdict lands: /results/... on the claim, or its s3:// URL (run folder via S3).
        self.results_uri = handoff_results_uri(step, handoff_prefix) if handoff else (
            step.results.uri if step.results else None)

    def cleanup(
        self,
        pod: k8s.V1Pod,
        remote_pod: k8s.V1Pod,
        xcom_result: dict | None = None,
        context: Context | None = None,
    ) -> None:
        exit_code = container_exit_code(remote_pod, self.base_container_name)
        if context is not None:
            publish_exit_code(context, exit_code)
            if self.results_uri and exit_code in (EXIT_PASS, EXIT_FAIL):
                context["ti"].xcom_push(key=c.XCOM_RESULTS, value=self.results_uri)
        try:
            super().cleanup(pod=pod, remote_pod=remote_pod, xcom_result=xcom_result, context=context)
        except AirflowException as exc:
            if exit_code in (EXIT_FAIL, EXIT_BAD_INPUT):
                try:
                    raise_for_exit(self.step.name, exit_code, self.results_uri)
                except TollgateError as mapped:
                    raise mapped from exc
            raise
