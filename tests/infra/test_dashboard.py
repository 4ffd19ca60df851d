"""The Grafana dashboard and its provisioning files: schema shape, and every query parses (promtool, offline).

The live check (each query returns series from a real Prometheus after real traffic) is
tests/infra/test_dashboard_live.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from evals import settings
from tests.infra import dashboard_queries as dq

GRAFANA = settings.REPO_ROOT / "infra" / "monitoring" / "grafana"


def test_dashboard_is_current_schema_with_a_prometheus_datasource_variable() -> None:
    dash = dq.load()
    assert dash["schemaVersion"] >= 39 and dash["uid"] and dash["title"]
    names = {v["name"]: v for v in dash["templating"]["list"]}
    assert names["datasource"]["type"] == "datasource" and names["datasource"]["query"] == "prometheus"
    assert {"model", "version", "arm"} <= set(names)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dash["panels"]:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and t["refId"] and t["expr"]


def test_dashboard_covers_what_the_issue_asks_for() -> None:
    titles = " | ".join(p["title"].lower() for p in dq.load()["panels"])
    exprs = " ".join(e for _, e in dq.panel_queries())
    for word in ("requests/s", "error", "latency", "time to first token", "tokens", "cost", "queue depth",
                 "guardrail", "quality", "stable:", "canary:"):
        assert word in titles, word
    for metric in ("llm_requests_total", "llm_errors_total", "llm_request_duration_seconds", "llm_tokens_total",
                   "llm_time_to_first_token_seconds", "llm_request_cost_dollars", "llm_queue_depth",
                   "llm_guardrail_violations_total", "llm_quality_score", "llm_fallback_total"):
        assert metric in exprs or metric.replace("llm_", "model_version_arm:llm_").split("_total")[0] in exprs, metric


def test_every_panel_query_parses(tmp_path: Path) -> None:
    """promtool parses each substituted expression (as the expr of a recording rule)."""
    queries = [e for _, e in dq.panel_queries()] + [q for _, _, q in dq.variable_queries()]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": q}
                                                         for i, q in enumerate(queries)]}]}
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([str(settings.current().promtool_bin), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_files_point_at_the_dashboard_and_a_prometheus() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "tollgate-prometheus.yaml").read_text())
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "tollgate.yaml").read_text())
    provider = prov["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]
