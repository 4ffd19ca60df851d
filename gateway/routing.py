"""Routing state (stable, optional canary, weight) and the sticky arm assignment.

A user's arm is a pure function of (model, user, weight): the user's 64-bit hash picks
a bucket in [0, 10000) and the canary gets buckets below ``weight * 100``. The same user
therefore stays on the same arm while the weight is unchanged, raising the weight only
moves stable users to the canary (never back), and over many users the canary share is
the weight to within sampling noise (a test checks 1 point over 20,000 users). Requests
without a user are assigned by the hash of their request id.

The state document is one JSON shape everywhere (the admin API's ``GET /admin/state``,
the watched routing file, the shared-memory copy the workers read)::

    {"model": str, "stable": {"url", "version"}, "canary": {...} | null, "weight": int, "generation": int}
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from evals.errors import BadInput
from gateway.config import GatewayConfig, Slot, parse_slot, parse_weight

BUCKETS = 10_000


@dataclass(frozen=True)
class RoutingState:
    model: str
    stable: Slot
    canary: Slot | None = None
    weight: int = 0
    generation: int = 0

    @classmethod
    def from_config(cls, cfg: GatewayConfig) -> RoutingState:
        return cls(model=cfg.model, stable=cfg.stable, canary=cfg.canary,
                   weight=cfg.weight if cfg.canary is not None else 0)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "stable": self.stable.as_dict(),
                "canary": self.canary.as_dict() if self.canary else None,
                "weight": self.weight, "generation": self.generation}

    def slot(self, arm: str) -> Slot:
        if arm == "canary" and self.canary is not None:
            return self.canary
        return self.stable

    def same_routing(self, other: RoutingState) -> bool:
        return (self.stable, self.canary, self.weight) == (other.stable, other.canary, other.weight)

    # -- the admin operations: each returns the next state, or raises BadInput (state unchanged) ---------
    def with_canary(self, body: Any) -> RoutingState:
        if not isinstance(body, dict):
            raise BadInput("body must be a JSON object {url, version, weight}")
        slot = parse_slot("body", "", {k: v for k, v in body.items() if k != "weight"})
        weight = parse_weight("body: weight", body.get("weight", 0))
        return replace(self, canary=slot, weight=weight, generation=self.generation + 1)

    def with_weight(self, body: Any) -> RoutingState:
        if not isinstance(body, dict) or "weight" not in body:
            raise BadInput("body must be a JSON object {\"weight\": 0..100}")
        weight = parse_weight("body: weight", body["weight"])
        if self.canary is None and weight != 0:
            raise BadInput("body: weight: no canary is deployed (PUT /admin/canary first)")
        return replace(self, weight=weight, generation=self.generation + 1)

    def without_canary(self) -> RoutingState:
        return replace(self, canary=None, weight=0, generation=self.generation + 1)

    def with_stable(self, body: Any) -> RoutingState:
        if not isinstance(body, dict):
            raise BadInput("body must be a JSON object {url, version}")
        return replace(self, stable=parse_slot("body", "", body), generation=self.generation + 1)


def state_from_doc(doc: Any, where: str, model: str, generation: int) -> RoutingState:
    """A routing file's content as a state (its own ``generation`` is ignored: ours counts)."""
    if not isinstance(doc, dict):
        raise BadInput(f"{where}: must be a JSON object with stable, canary, weight")
    unknown = set(doc) - {"model", "stable", "canary", "weight", "generation"}
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if doc.get("model", model) != model:
        raise BadInput(f"{where}: model {doc.get('model')!r} is not this gateway's model {model!r}")
    if "stable" not in doc:
        raise BadInput(f"{where}: stable is required")
    canary = doc.get("canary")
    weight = parse_weight(f"{where}: weight", doc.get("weight", 0))
    if canary is None and weight:
        raise BadInput(f"{where}: weight {weight} without a canary")
    return RoutingState(model=model, stable=parse_slot(where, "stable.", doc["stable"]),
                        canary=None if canary is None else parse_slot(where, "canary.", canary),
                        weight=weight, generation=generation)


def user_digest(model: str, user: str) -> bytes:
    return hashlib.blake2b(user.encode("utf-8", "surrogatepass"), digest_size=8, person=b"tollgate",
                           salt=model.encode()[:16]).digest()


def bucket_of(digest: bytes) -> int:
    return int.from_bytes(digest, "big") % BUCKETS


def assign(state: RoutingState, digest: bytes) -> str:
    """"canary" or "stable" for a user's (or request's) digest under this state."""
    if state.canary is None or state.weight <= 0:
        return "stable"
    return "canary" if bucket_of(digest) < state.weight * (BUCKETS // 100) else "stable"
