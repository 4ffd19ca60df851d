"""Kubernetes deployments of a promotion: a Deployment pair behind one Service, or an Argo Rollout.

**Deployment pair** (``TOLLGATE_DEPLOY_TARGET=kubernetes``): ``vllm-<model>-stable``,
``vllm-<model>-canary`` and ``vllm-<model>-previous`` (the warm old stable), created once
from ``infra/k8s/vllm-deployment.yaml``. Pods of stable and canary carry
``tollgate.dev/serving: "true"`` and the model's Service selects on it, so a pod of the warm
previous slot never receives traffic. A version is deployed by patching a Deployment's pod
template (the ``--model`` path and ``--served-model-name`` of vLLM, the version labels).
The canary weight is the gateway's (its admin API) when one is configured, the precise
split; without a gateway it is the replica ratio (``round(replicas * weight / 100)``
canary pods, at least one while the weight is above 0). The canary is always patched
first: scaling up it adds capacity before stable shrinks, scaling down (an abort) it
stops the candidate's share at once.

**Argo Rollout** (``TOLLGATE_DEPLOY_TARGET=argo``): ``infra/k8s/argo-rollout-canary.yaml``,
whose steps are the policy's weights each followed by an indefinite pause. Deploying the
canary patches the pod template (Argo starts the canary); moving to the next weight is
Argo's promote (clear ``status.pauseConditions``); weight 0 is Argo's abort
(``status.abort``); the full rollout is ``status.promoteFull``. The version of each slot
is kept in annotations (``tollgate.dev/stable-version``, ``tollgate.dev/canary-version``).

Both analyse with the same PromQL (evals.canary.analysis), in the DAG or in the Rollout's
AnalysisTemplate. Kubernetes clients are imported inside the calls (TID253).
"""

from __future__ import annotations

import logging
from typing import Any

from tollgate import constants as c
from tollgate.deploy.base import (
    CANARY,
    PREVIOUS,
    STABLE,
    DeploymentError,
    DeploymentState,
    Slot,
    check_slot,
    check_weight,
)
from tollgate.serving.base import relative_model_path, served_name, slug

log = logging.getLogger("tollgate.deploy")

LABEL_SERVING = "tollgate.dev/serving"
LABEL_SLOT = "tollgate.dev/slot"
ANNOTATION_VERSION = "tollgate.dev/{slot}-version"
CONTAINER = "vllm"
ARGO = ("argoproj.io", "v1alpha1", "rollouts")


def base_name(model: str) -> str:
    return f"vllm-{slug(model)[:40].strip('-')}"


def model_args(args: list[str], model: str, version: str) -> list[str]:
    """vLLM's args with ``--model`` and ``--served-model-name`` pointing at ``version``."""
    new = list(args)
    values = {"--model": f"{c.MODEL_MOUNT_PATH}/{relative_model_path(model, version, None)}",
              "--served-model-name": served_name(model, version)}
    for flag, value in values.items():
        if flag in new and new.index(flag) + 1 < len(new):
            new[new.index(flag) + 1] = value
        else:
            new += [flag, value]
    return new


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


def api_client(config_file: str | None, in_cluster: bool | None) -> Any:
    """A kubernetes ApiClient: the kubeconfig file when given, else in-cluster unless told otherwise."""
    from kubernetes import client, config

    if config_file:
        return config.new_client_from_config(config_file=config_file)
    if in_cluster is not False:
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config()


class KubernetesDeployment:
    """The Deployment pair; weights through the gateway when ``admin`` is given, else by replicas."""

    def __init__(self, model: str, namespace: str, apps: Any, *, admin: Any | None = None, replicas: int = 4) -> None:
        self.model, self.namespace, self.apps, self.admin = model, namespace, apps, admin
        self.replicas = replicas
        self.base = base_name(model)

    @classmethod
    def from_settings(cls, model: str, **kwargs: Any) -> KubernetesDeployment:
        from tollgate import settings

        s = settings.current()
        from kubernetes import client

        admin = kwargs.pop("admin", None) or _gateway(s)
        apps = client.AppsV1Api(api_client(s.k8s_config_file, s.k8s_in_cluster))
        return cls(model, s.k8s_namespace, apps, admin=admin, **kwargs)

    def name(self, slot: str) -> str:
        return f"{self.base}-{check_slot(slot)}"

    def url(self) -> str:
        return f"http://{self.base}.{self.namespace}.svc.cluster.local:{c.VLLM_PORT}"

    def _read(self, slot: str) -> Any | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.apps.read_namespaced_deployment(self.name(slot), self.namespace)
        except ApiException as exc:
            if _status(exc) == 404:
                return None
            raise

    def _patch(self, slot: str, body: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.apps.patch_namespaced_deployment(self.name(slot), self.namespace, body)
        except ApiException as exc:
            if _status(exc) == 404:
                raise DeploymentError(f"Deployment {self.namespace}/{self.name(slot)} does not exist: create the "
                                      "slots from infra/k8s/vllm-deployment.yaml first") from None
            raise DeploymentError(f"patch of {self.namespace}/{self.name(slot)} refused: {exc.reason}") from None
        log.info("patched Deployment %s/%s: %s", self.namespace, self.name(slot), body)

    def _scale(self, slot: str, replicas: int) -> None:
        self._patch(slot, {"spec": {"replicas": replicas}})

    def _template_patch(self, slot: str, version: str, replicas: int, serving: bool) -> dict[str, Any]:
        dep = self._read(slot)
        if dep is None:
            raise DeploymentError(f"Deployment {self.namespace}/{self.name(slot)} does not exist: create the slots "
                                  "from infra/k8s/vllm-deployment.yaml first")
        containers = dep.spec.template.spec.containers
        current = next((ct for ct in containers if ct.name == CONTAINER), containers[0])
        labels = {c.LABEL_MODEL_VERSION: slug(version)[:63], LABEL_SLOT: slot,
                  LABEL_SERVING: "true" if serving else "false"}
        return {
            "metadata": {"labels": {c.LABEL_MODEL_VERSION: slug(version)[:63]},
                         "annotations": {ANNOTATION_VERSION.format(slot=slot): version}},
            "spec": {"replicas": replicas, "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": current.name,
                                         "args": model_args(list(current.args or []), self.model, version)}]}}},
        }

    # -- the interface ---------------------------------------------------------------------
    def deploy(self, slot: str, version: str) -> Slot:
        check_slot(slot)
        if slot == PREVIOUS:
            raise DeploymentError("the previous slot is only filled by a full rollout")
        replicas = (1 if self.admin else 0) if slot == CANARY else self.replicas
        self._patch(slot, self._template_patch(slot, version, replicas, serving=True))
        if slot == CANARY and self.admin:
            self.admin.set_canary(f"http://{self.name(CANARY)}.{self.namespace}.svc.cluster.local:{c.VLLM_PORT}",
                                  version, 0, served_model=served_name(self.model, version))
        return Slot(version=version, url=self.url(), detail={"deployment": self.name(slot)})

    def set_weight(self, weight: int) -> DeploymentState:
        check_weight(weight)
        if self.admin:
            self.admin.set_weight(weight)
            return self.state()
        canary = 0 if weight == 0 else max(1, round(self.replicas * weight / 100))
        self._scale(CANARY, canary)  # first: an abort stops the candidate's share at once
        self._scale(STABLE, 0 if weight == 100 else max(1, self.replicas - canary))
        return self.state()

    def _version(self, dep: Any, slot: str) -> str | None:
        ann = (dep.metadata.annotations or {}) if dep and dep.metadata else {}
        return ann.get(ANNOTATION_VERSION.format(slot=slot))

    def state(self) -> DeploymentState:
        deps = {slot: self._read(slot) for slot in (STABLE, CANARY, PREVIOUS)}
        replicas = {slot: int((d.spec.replicas or 0) if d and d.spec else 0) for slot, d in deps.items()}

        def slot(name: str) -> Slot | None:
            version = self._version(deps[name], name)
            # stable keeps its version at 0 replicas (100 % canary); an idle canary or previous slot is empty
            if not version or (name != STABLE and not replicas[name]):
                return None
            return Slot(version=version, url=self.url(), detail={"deployment": self.name(name),
                                                               "replicas": replicas[name]})

        if self.admin:
            weight = int(self.admin.state().get("weight") or 0)
        else:
            total = replicas[STABLE] + replicas[CANARY]
            weight = round(100 * replicas[CANARY] / total) if total else 0
        return DeploymentState(self.model, slot(STABLE), slot(CANARY), weight, slot(PREVIOUS))

    def remove(self, slot: str) -> DeploymentState:
        check_slot(slot)
        if slot == STABLE:
            raise DeploymentError("the stable slot is never removed; restore another version into it instead")
        if slot == CANARY:
            if self.admin:
                self.admin.set_weight(0)
                self.admin.remove_canary()
            self._scale(CANARY, 0)
            if not self.admin:
                self._scale(STABLE, self.replicas)
        else:
            self._scale(PREVIOUS, 0)
        return self.state()

    def promote_canary(self) -> DeploymentState:
        st = self.state()
        if st.canary is None:
            raise DeploymentError(f"{self.model}: no canary to promote")
        if st.stable is not None:  # the old stable stays warm, out of the Service
            self._patch(PREVIOUS, self._template_patch(PREVIOUS, st.stable.version, 1, serving=False))
        self._patch(STABLE, self._template_patch(STABLE, st.canary.version, self.replicas, serving=True))
        if self.admin:
            self.admin.set_stable(self.url(), st.canary.version, served_model=served_name(self.model,
                                                                                         st.canary.version))
            self.admin.remove_canary()
        self._scale(CANARY, 0)
        return self.state()

    def restore(self, version: str) -> DeploymentState:
        st = self.state()
        self._patch(STABLE, self._template_patch(STABLE, version, self.replicas, serving=True))
        if self.admin:
            self.admin.set_stable(self.url(), version, served_model=served_name(self.model, version))
        if st.previous is not None and st.previous.version == version:
            self._scale(PREVIOUS, 0)
        return self.state()


class ArgoRolloutDeployment:
    """One Argo Rollout: Argo moves the pods and the traffic; this class drives its steps."""

    def __init__(self, model: str, namespace: str, custom: Any, *, name: str | None = None) -> None:
        self.model, self.namespace, self.custom = model, namespace, custom
        self.rollout = name or base_name(model)

    @classmethod
    def from_settings(cls, model: str, **kwargs: Any) -> ArgoRolloutDeployment:
        from tollgate import settings

        s = settings.current()
        from kubernetes import client

        custom = client.CustomObjectsApi(api_client(s.k8s_config_file, s.k8s_in_cluster))
        return cls(model, s.k8s_namespace, custom, **kwargs)

    def _get(self) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(*ARGO[:2], self.namespace, ARGO[2],
                                                                           self.rollout)
        except ApiException as exc:
            if _status(exc) == 404:
                raise DeploymentError(f"Rollout {self.namespace}/{self.rollout} does not exist (or the Argo "
                                      "Rollouts CRD is missing): apply infra/k8s/argo-rollout-canary.yaml") from None
            raise
        return obj

    def _patch(self, body: dict[str, Any], *, status: bool = False) -> None:
        fn = (self.custom.patch_namespaced_custom_object_status if status
              else self.custom.patch_namespaced_custom_object)
        fn(*ARGO[:2], self.namespace, ARGO[2], self.rollout, body)
        log.info("patched Rollout %s/%s%s: %s", self.namespace, self.rollout, "/status" if status else "", body)

    def _template(self, obj: dict[str, Any], version: str, slot: str) -> dict[str, Any]:
        containers = obj["spec"]["template"]["spec"]["containers"]
        current = next((ct for ct in containers if ct.get("name") == CONTAINER), containers[0])
        container = {**current, "args": model_args(list(current.get("args") or []), self.model, version)}
        return {"metadata": {"annotations": {ANNOTATION_VERSION.format(slot=slot): version}},
                "spec": {"template": {"metadata": {"labels": {c.LABEL_MODEL_VERSION: slug(version)[:63]}},
                                      "spec": {"containers": [container]}}}}

    def _steps(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = obj["spec"]["strategy"]["canary"]["steps"]
        return steps

    def deploy(self, slot: str, version: str) -> Slot:
        check_slot(slot)
        if slot != CANARY:
            raise DeploymentError("an Argo Rollout takes new versions as its canary (restore() for a rollback)")
        self._patch(self._template(self._get(), version, CANARY))
        return Slot(version=version, url=None, detail={"rollout": self.rollout})

    def set_weight(self, weight: int) -> DeploymentState:
        check_weight(weight)
        if weight == 0:
            self._patch({"status": {"abort": True}}, status=True)
            return self.state()
        obj = self._get()
        weights = [s["setWeight"] for s in self._steps(obj) if "setWeight" in s]
        if weight == 100:
            self._patch({"status": {"promoteFull": True}}, status=True)
        elif weight not in weights:
            raise DeploymentError(f"Rollout {self.rollout} has no step setWeight: {weight} (steps {weights})")
        else:  # Argo's promote: leave the pause the rollout waits in; its next step sets this weight
            self._patch({"spec": {"paused": False}})
            self._patch({"status": {"pauseConditions": None}}, status=True)
        return self.state()

    def state(self) -> DeploymentState:
        obj = self._get()
        ann = obj.get("metadata", {}).get("annotations") or {}
        status = obj.get("status") or {}
        weight = int(((status.get("canary") or {}).get("weights") or {}).get("canary", {}).get("weight") or 0)
        stable_v, canary_v = ann.get(ANNOTATION_VERSION.format(slot=STABLE)), ann.get(
            ANNOTATION_VERSION.format(slot=CANARY))
        return DeploymentState(self.model, Slot(stable_v) if stable_v else None,
                               Slot(canary_v) if canary_v and canary_v != stable_v else None, weight)

    def remove(self, slot: str) -> DeploymentState:
        check_slot(slot)
        if slot == STABLE:
            raise DeploymentError("the stable slot is never removed; restore another version into it instead")
        if slot == CANARY:
            self._patch({"status": {"abort": True}}, status=True)
        return self.state()  # previous: Argo scales the old ReplicaSet down after scaleDownDelaySeconds

    def promote_canary(self) -> DeploymentState:
        obj = self._get()
        version = (obj.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_VERSION.format(slot=CANARY))
        if not version:
            raise DeploymentError(f"Rollout {self.rollout}: no canary to promote")
        self._patch({"status": {"promoteFull": True}}, status=True)
        self._patch({"metadata": {"annotations": {ANNOTATION_VERSION.format(slot=STABLE): version}}})
        return self.state()

    def restore(self, version: str) -> DeploymentState:
        body = self._template(self._get(), version, STABLE)
        body["metadata"]["annotations"][ANNOTATION_VERSION.format(slot=CANARY)] = version
        self._patch(body)
        self._patch({"status": {"promoteFull": True}}, status=True)  # a rollback skips the canary steps
        return self.state()


def _gateway(s: Any) -> Any | None:
    """The in-cluster gateway's admin client when TOLLGATE_GATEWAY_ADMIN_URL is set, else None (replica split)."""
    if not s.gateway_admin_url:
        return None
    from gateway.client import AdminClient
    from tollgate import settings

    token = settings.evals_settings().gateway_admin_token
    if not token:
        raise DeploymentError("TOLLGATE_GATEWAY_ADMIN_URL is set but TOLLGATE_GATEWAY_ADMIN_TOKEN is not")
    return AdminClient(s.gateway_admin_url, token)
