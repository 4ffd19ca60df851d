"""A small client of the gateway's admin API, for the DAGs, the deployment layer and tests.

    AdminClient("http://127.0.0.1:8091", token).set_canary("http://127.0.0.1:8011", "2", 10)

Every call returns the state document (``GET /admin/state``'s shape). A refused change raises
:class:`AdminError` with the gateway's message and HTTP status; the routing is then unchanged.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from evals.errors import CheckFailed


class AdminError(CheckFailed):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"gateway admin API answered {status}: {message}")
        self.status = status


class AdminClient:
    def __init__(self, base_url: str, token: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    def __repr__(self) -> str:  # never the token
        return f"AdminClient({self.base_url!r})"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers={  # noqa: S310 - http(s) base URL of the gateway
            "Authorization": f"Bearer {self._token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - the configured gateway
                out: dict[str, Any] = json.load(resp)
                return out
        except urllib.error.HTTPError as exc:
            try:
                message = json.load(exc).get("error", {}).get("message", exc.reason)
            except (ValueError, AttributeError):
                message = str(exc.reason)
            raise AdminError(exc.code, message) from None
        except (urllib.error.URLError, OSError) as exc:
            raise CheckFailed(f"gateway admin API at {self.base_url} unreachable: {exc}") from None

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/admin/state")

    def set_canary(self, url: str, version: str, weight: int = 0, served_model: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"url": url, "version": version, "weight": weight}
        if served_model:
            body["served_model"] = served_model
        return self._call("PUT", "/admin/canary", body)

    def set_weight(self, weight: int) -> dict[str, Any]:
        return self._call("PUT", "/admin/weight", {"weight": weight})

    def remove_canary(self) -> dict[str, Any]:
        return self._call("DELETE", "/admin/canary")

    def set_stable(self, url: str, version: str, served_model: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"url": url, "version": version}
        if served_model:
            body["served_model"] = served_model
        return self._call("PUT", "/admin/stable", body)
