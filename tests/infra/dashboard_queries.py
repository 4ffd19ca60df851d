"""The PromQL of infra/monitoring/grafana/tollgate.json, with Grafana's template variables substituted.

Grafana replaces ``$var`` / ``${var}`` before it sends a query; with a variable at "All"
it sends the variable's ``allValue``. ``$__rate_interval`` and friends are Grafana's
built-ins; they become fixed windows here. ``label_values(metric, label)`` (a variable's
query, Grafana syntax, not PromQL) becomes the PromQL Grafana's datasource runs for it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from evals import settings

DASHBOARD = settings.REPO_ROOT / "infra" / "monitoring" / "grafana" / "tollgate.json"
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*(\w+)\)$", re.S)


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


def variables(dash: dict[str, Any]) -> dict[str, str]:
    """Each variable's value at "All" (its allValue), the datasource variable's uid placeholder aside."""
    values = dict(BUILTINS)
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            values[v["name"]] = v.get("allValue") or ".*"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"unknown template variable ${name} in {expr!r}")
        return values[name]

    return _VAR.sub(repl, expr)


def panel_queries(dash: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(panel title / refId, PromQL) for every target of every panel, variables substituted."""
    dash = dash or load()
    values = variables(dash)
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((f"{panel['title']} / {target['refId']}", substitute(target["expr"], values)))
    return out


def variable_queries(dash: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """(variable, label, PromQL) for every query variable: label_values(m, l) -> group by (l) (m)."""
    dash = dash or load()
    values = variables(dash)
    out = []
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        raw = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = _LABEL_VALUES.match(raw.strip())
        assert m, f"variable {v['name']}: expected label_values(metric, label), got {raw!r}"
        out.append((v["name"], m.group(2), f"group by ({m.group(2)}) ({substitute(m.group(1), values)})"))
    return out
