"""A small client for Airflow's REST API: log in, find pending approvals, answer them.

It is what `./tollgate approve` runs, and what tests use to answer an ApprovalOperator
the way a person's browser would. No Airflow import: it talks HTTP only, so it works
from a laptop against a remote deployment too.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from tollgate.exceptions import TollgateError


class ApprovalApiError(TollgateError):
    """The API refused or failed; `status` is the HTTP status (0 when unreachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


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
