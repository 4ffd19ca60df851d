"""A Kubernetes API on 127.0.0.1 for KubernetesPodOperator: kmock plus a small shim.

kmock 0.8's KubernetesEmulator stores objects and serves CRUD/list/watch. What a
pod operator needs on top, and this shim adds:

- pods get uid, creationTimestamp, resourceVersion and ``status.phase`` on create;
- a lifecycle loop moves pods Pending -> Running -> Succeeded (or Failed with the
  exit code configured for their step) with containerStatuses, and marks
  Deployments ready;
- ``v1/events`` and friends are declared so lists work before any create;
- a pod log route (``.../pods/NAME/log``) answers with timestamped lines;
- label selectors on lists (kmock ignores them; KPO's reattach logic relies on them).

It runs in a background thread with its own event loop, so sync code under test
(dag.test(), the kubernetes client) can talk to it.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock

STEP_LABEL = "tollgate.dev/step"


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selectors: k=v, k==v, k!=v, k, !k (comma = and)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class PodLifecycleEmulator(kmock.KubernetesEmulator):
    exit_codes: dict[str, int]
    phase_seconds: float
    deployments_become_ready: bool

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.url.path == "/version/":  # the kubernetes client's VersionApi adds the slash
            return aiohttp.web.json_response(await self._serve_server_version(request))
        if request.resource is not None and request.resource.plural == "pods" and request.subresource == "log":
            step = self._labels(request).get(STEP_LABEL, "?")
            lines = f"{_now()} kmock: step {step} started\n{_now()} kmock: step {step} finished\n"
            return aiohttp.web.Response(text=lines, content_type="text/plain")
        return await super()._handle(request)

    def _labels(self, request: kmock.Request) -> dict[str, str]:
        try:
            obj = self.objects[request.resource, request.namespace, request.name]
        except KeyError:
            return {}
        return dict(obj.get("metadata", {}).get("labels") or {})

    async def _serve_create(self, request: kmock.Request) -> Any:
        await super()._serve_create(request)
        meta = request.data.get("metadata", {})
        obj = self.objects[request.resource, request.namespace or meta.get("namespace"), meta.get("name")]
        stamp: dict[str, Any] = {"metadata": {"uid": str(uuid.uuid4()), "creationTimestamp": _now(),
                                              "resourceVersion": "1", "generation": 1}}
        if request.resource.plural == "pods":
            stamp["status"] = {"phase": "Pending", "conditions": []}
            stamp["metadata"]["annotations"] = {**(meta.get("annotations") or {}),
                                                "kmock/pending-since": str(time.monotonic())}
        async with self._lock:
            obj.patch(stamp)
        return obj.raw

    async def _serve_list(self, request: kmock.Request) -> Any:
        result = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector:
            result["items"] = [
                item for item in result["items"]
                if selector_matches(selector, (item.get("metadata", {}).get("labels") or {}))
            ]
        return result

    async def run_lifecycle(self) -> None:
        while True:
            async with self._lock:
                for (resource, _ns, _name), obj in list(self.objects.items()):
                    if obj.deleted:
                        continue
                    if resource.plural == "pods":
                        self._advance_pod(obj)
                    elif (resource.plural == "deployments" and self.deployments_become_ready
                          and not obj.get("status", {}).get("readyReplicas")):
                        replicas = obj.get("spec", {}).get("replicas", 1)
                        obj.patch({"status": {"replicas": replicas, "readyReplicas": replicas,
                                              "availableReplicas": replicas, "observedGeneration": 1}})
            await asyncio.sleep(0.1)

    def _advance_pod(self, obj: Any) -> None:
        status = obj.get("status", {})
        annotations = obj.get("metadata", {}).get("annotations") or {}
        since = float(annotations.get("kmock/pending-since", "0"))
        age = time.monotonic() - since
        phase = status.get("phase")
        containers = [c["name"] for c in obj.get("spec", {}).get("containers", [])]
        if phase == "Pending" and age > self.phase_seconds:
            obj.patch({"status": {
                "phase": "Running", "startTime": _now(),
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": n, "ready": True, "restartCount": 0, "image": "kmock", "imageID": "",
                     "state": {"running": {"startedAt": _now()}}} for n in containers
                ],
            }})
        elif phase == "Running" and age > 2 * self.phase_seconds:
            step = (obj.get("metadata", {}).get("labels") or {}).get(STEP_LABEL, "")
            code = self.exit_codes.get(step, 0)
            obj.patch({"status": {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"name": n, "ready": False, "restartCount": 0, "image": "kmock", "imageID": "",
                     "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                              "startedAt": _now(), "finishedAt": _now()}}} for n in containers
                ],
            }})


class KmockCluster:
    """``with KmockCluster(tmp_path, exit_codes={"gate-check": 1}) as cluster: ...``"""

    def __init__(self, workdir: Path, exit_codes: dict[str, int] | None = None, phase_seconds: float = 0.3,
                 deployments_become_ready: bool = True) -> None:
        self.workdir = workdir
        self.deployments_become_ready = deployments_become_ready
        self.exit_codes = dict(exit_codes or {})
        self.phase_seconds = phase_seconds
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kmock", daemon=True)
        self.emulator: PodLifecycleEmulator | None = None
        self.url = ""
        self.kubeconfig = workdir / "kubeconfig.yaml"

    def _call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        self.emulator = PodLifecycleEmulator()
        self.emulator.exit_codes = self.exit_codes
        self.emulator.phase_seconds = self.phase_seconds
        self.emulator.deployments_become_ready = self.deployments_become_ready
        for res in ("v1/pods", "v1/events", "v1/services", "apps/v1/deployments"):
            self.emulator.resources[res] = {}
        await self.emulator.__aenter__()
        self._server = kmock.Server(self.emulator, host="127.0.0.1")
        await self._server.__aenter__()
        self._ticker = asyncio.get_running_loop().create_task(self.emulator.run_lifecycle())

    async def _stop(self) -> None:
        self._ticker.cancel()
        await self._server.__aexit__(None, None, None)
        await self.emulator.__aexit__(None, None, None)

    def __enter__(self) -> KmockCluster:
        self.thread.start()
        self._call(self._start())
        self.url = str(self._server.url).rstrip("/")
        assert self.url.startswith("http://127.0.0.1:"), self.url
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
            f"clusters:\n- name: kmock\n  cluster:\n    server: {self.url}\n"
            "contexts:\n- name: kmock\n  context:\n    cluster: kmock\n    user: kmock\n    namespace: tollgate-test\n"
            "users:\n- name: kmock\n  user: {}\n"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

    # -- what tests assert on ----------------------------------------------------------------
    def objects(self, resource: str) -> list[tuple[dict[str, Any], bool]]:
        """(last known state, deleted?) for every object of a resource ever created."""
        async def collect() -> list[tuple[dict[str, Any], bool]]:
            out = []
            for (res, _ns, _name), obj in list(self.emulator.objects.items()):
                if res == kmock.resource(resource):
                    out.append((obj.last.raw if obj.deleted else obj.raw, obj.deleted))
            return out
        return self._call(collect())

    def requests(self) -> list[kmock.Request]:
        return list(self.emulator.requests) if hasattr(self.emulator, "requests") else []
