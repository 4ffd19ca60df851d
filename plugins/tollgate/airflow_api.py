"""A small client for Airflow's REST API: log in, trigger runs, find and answer approvals.

It is what `./tollgate demo` and `./tollgate approve` use, and what tests use to answer
an ApprovalOperator the way a person's browser would. No Airflow import: it talks HTTP
only, so it works from a laptop against a remote deployment too.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from tollgate.exceptions import ApprovalApiError


@dataclass(frozen=True)
class PendingApproval:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    subject: str
    body: str
    options: list[str]
    assigned_users: list[str]


class AirflowApi:
    def __init__(self, base_url: str, username: str, password: str, timeout_s: float = 15.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ApprovalApiError(f"Airflow URL {base_url!r} must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._token = self._login(username, password)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 token: str | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method,  # noqa: S310 - http(s) checked
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - operator-given URL
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("detail", detail)
            raise ApprovalApiError(f"{method} {path}: HTTP {exc.code}: {detail}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ApprovalApiError(f"Airflow API at {self.base_url} unreachable: {exc}") from None
        return json.loads(raw) if raw else None

    def _login(self, username: str, password: str) -> str:
        reply = self._request("POST", "/auth/token", {"username": username, "password": password})
        return str(reply["access_token"])

    def get(self, path: str) -> Any:
        return self._request("GET", path, token=self._token)

    def pending_approvals(self, dag_id: str = "~", run_id: str = "~") -> list[PendingApproval]:
        query = urllib.parse.urlencode({"response_received": "false", "limit": 100})
        reply = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/hitlDetails?{query}")
        out = []
        for item in reply.get("hitl_details", []):
            ti = item.get("task_instance") or {}
            out.append(PendingApproval(
                dag_id=ti.get("dag_id", ""), run_id=ti.get("dag_run_id", ""), task_id=ti.get("task_id", ""),
                map_index=int(ti.get("map_index", -1)), subject=item.get("subject", ""),
                body=item.get("body") or "", options=list(item.get("options") or []),
                assigned_users=[u.get("id", "") for u in item.get("assigned_users") or []],
            ))
        return out

    def respond(self, approval: PendingApproval, option: str) -> dict[str, Any]:
        path = (f"/api/v2/dags/{approval.dag_id}/dagRuns/{urllib.parse.quote(approval.run_id, safe='')}"
                f"/taskInstances/{approval.task_id}/{approval.map_index}/hitlDetails")
        return self._request("PATCH", path, {"chosen_options": [option], "params_input": {}}, token=self._token)

    # -- DAGs and runs ---------------------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout_s: float = 180.0) -> dict[str, Any]:
        """Poll until the dag-processor has parsed `dag_id` (a fresh install starts with none)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.get(f"/api/v2/dags/{dag_id}")
            except ApprovalApiError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(1.0)  # bounded by the deadline above

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False}, token=self._token)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        reply = self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body, token=self._token)
        return str(reply["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=-run_after").get("dag_runs", []))

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        reply = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
                         "?limit=200")
        return {t["task_id"]: t.get("state") or "none" for t in reply.get("task_instances", [])}

    def clear_task(self, dag_id: str, run_id: str, task_id: str) -> list[str]:
        """Clear one task of a run, whatever its state (the UI's *Clear*): it runs again. Returns the cleared ids."""
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": [task_id], "only_failed": False,
                "reset_dag_runs": True}
        reply = self._request("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", body, token=self._token)
        return [str(t.get("task_id")) for t in (reply or {}).get("task_instances", [])]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """A task's XCom value (deserialized), or None when there is none."""
        path = (f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
                f"/xcomEntries/{key}?deserialize=true")
        try:
            return self.get(path).get("value")
        except ApprovalApiError as exc:
            if exc.status == 404:
                return None
            raise

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float,
                     until: tuple[str, ...] = ("success", "failed")) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.dag_run(dag_id, run_id)
            if run.get("state") in until:
                return run
            if time.monotonic() > deadline:
                raise ApprovalApiError(f"{dag_id} run {run_id} still {run.get('state')} after {timeout_s:.0f} s")
            time.sleep(2.0)  # bounded by the deadline above

    def wait_for_approval(self, dag_id: str, run_id: str, timeout_s: float) -> PendingApproval:
        """Poll until the run's approval task waits for a person (or the run ends: an error).

        ``run_id="~"`` takes the first pending approval of any run of the DAG.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            pending = self.pending_approvals(dag_id, run_id)
            # Answer only once the task is parked: an answer racing the park can fail it (apache/airflow#72716).
            if pending and self.task_states(dag_id, pending[0].run_id).get(pending[0].task_id) == "awaiting_input":
                return pending[0]
            state = self.dag_run(dag_id, run_id).get("state") if run_id != "~" else None
            if state in ("success", "failed"):
                raise ApprovalApiError(f"{dag_id} run {run_id} ended ({state}) without asking for approval: "
                                       f"{self.task_states(dag_id, run_id)}")
            if time.monotonic() > deadline:
                raise ApprovalApiError(f"no approval requested by {dag_id} run {run_id} within {timeout_s:.0f} s")
            time.sleep(2.0)  # bounded by the deadline above
