"""The embedded Prometheus: Debian's server started by the launcher, file_sd targets, rules, PromQL client.

One real Prometheus for the module, scraping a tiny in-process exporter that registers
itself the way the project's servers do (evals.launcher.targets).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evals import promql, settings
from evals.errors import BadInput
from evals.launcher import ManagedServer, ServerSpec, free_port, prometheus, stop_all_recorded, targets

pytestmark = pytest.mark.integration

EXPORTER_TEXT = (
    "# TYPE llm_requests_total counter\n"
    'llm_requests_total{model="t",version="1",arm="stable",status="200"} 5\n'
    'llm_requests_total{model="t",version="2",arm="canary",status="200"} 3\n'
)


class _Exporter(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = EXPORTER_TEXT.encode() if self.path == "/metrics" else b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def poll(check, timeout_s: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s:.0f} s")
        time.sleep(0.3)  # polling interval, bounded by the deadline


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("prom-home")
        mp.setenv("TOLLGATE_HOME", str(path))
        mp.delenv("TOLLGATE_LOG_DIR", raising=False)
        yield path


@pytest.fixture(scope="module")
def exporter(home: Path) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer((settings.LOOPBACK, 0), _Exporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    address = f"{settings.LOOPBACK}:{server.server_address[1]}"
    yield address
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def prom(home: Path) -> Iterator[str]:
    with ManagedServer(prometheus.prometheus_spec(free_port(), interval="1s")) as srv:
        yield srv.spec.base_url


def test_register_target_writes_file_sd_json(home: Path) -> None:
    path = targets.register_target("vllm", "x-1", "127.0.0.1:1234", {"served_model": "m:1"})
    assert path == home / "prometheus" / "targets" / "vllm--x-1.json"
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:1234"], "labels": {"tollgate_target": "x-1", "served_model": "m:1"}}]
    assert targets.registered()["vllm"][0]["targets"] == ["127.0.0.1:1234"]
    assert targets.unregister_target("vllm", "x-1") is True
    assert targets.unregister_target("vllm", "x-1") is False
    assert not path.exists()


@pytest.mark.parametrize(("job", "name", "address", "labels", "message"), [
    ("nginx", "a", "127.0.0.1:1", None, "unknown scrape job"),
    ("vllm", "a--b", "127.0.0.1:1", None, "target name"),
    ("vllm", "a", "127.0.0.1", None, "HOST:PORT"),
    ("vllm", "a", "127.0.0.1:1", {"bad-label": "x"}, "label name"),
])
def test_register_target_rejects_bad_input(home: Path, job, name, address, labels, message) -> None:
    with pytest.raises(BadInput, match=message):
        targets.register_target(job, name, address, labels)
    assert not list((home / "prometheus" / "targets").glob("*a*.json"))


def test_prometheus_discovers_a_registered_target_and_forgets_it(prom: str, exporter: str) -> None:
    targets.register_target("tollgate-gateway", "exporter", exporter, {"served_model": "t"})
    samples = poll(lambda: promql.query(prom, 'llm_requests_total{job="tollgate-gateway"}'), what="scraped series")
    by_arm = {s.metric["arm"]: s.value for s in samples}
    assert by_arm == {"stable": 5.0, "canary": 3.0}
    assert {s.metric["tollgate_target"] for s in samples} == {"exporter"}
    assert promql.scalar(prom, 'sum(llm_requests_total{job="tollgate-gateway"})') == 8.0
    end = time.time()
    series = promql.query_range(prom, 'llm_requests_total{arm="canary"}', end - 30, end, 1)
    assert series and all(v == 3.0 for _, v in series[0].values)
    up = {t["instance"]: t["health"] for t in promql.targets(prom) if t["job"] == "tollgate-gateway"}
    assert up == {exporter: "up"}

    targets.unregister_target("tollgate-gateway", "exporter")
    poll(lambda: not [t for t in promql.targets(prom) if t["job"] == "tollgate-gateway"], what="target dropped")


def test_the_rules_of_infra_monitoring_are_loaded(prom: str) -> None:
    with __import__("urllib.request").request.urlopen(prom + "/api/v1/rules", timeout=5) as resp:
        groups = json.loads(resp.read())["data"]["groups"]
    alerts = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
    assert {"LLMServiceDown", "LLMHighErrorRate", "QueueBacklog", "GPUHighTemperature",
            "LLMErrorBudgetBurnFast"} <= alerts
    assert all(g["file"].startswith(str(prometheus.RULES_DIR)) for g in groups)
    # and they evaluate without errors against live data
    assert all(r.get("health") == "ok" for g in groups for r in g["rules"] if r.get("lastEvaluation", "0001")
               [:4] != "0001"), [r for g in groups for r in g["rules"] if r.get("health") == "err"]


def test_promql_errors_are_clear_and_fail_closed(prom: str) -> None:
    with pytest.raises(promql.PromQLBadQuery, match="parse error"):
        promql.query(prom, "rate(up[5m]")
    with pytest.raises(promql.PromQLError, match="more than one|series where one"):
        promql.scalar(prom, "up")
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(promql.PromQLError, match=f"Prometheus at {down}.*unreachable"):
        promql.query(down, "up", timeout_s=2)
    with pytest.raises(promql.PromQLError):
        promql.targets(down, timeout_s=2)
    assert promql.scalar(prom, 'sum(up{job="nothing-here"})') is None


def test_a_managed_server_with_a_scrape_job_registers_while_it_runs(home: Path, prom: str) -> None:
    port = free_port()
    spec = ServerSpec(name="fake-vllm", argv=["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                      port=port, health_path="/", scrape_job="vllm", scrape_labels={"served_model": "m:9"},
                      ready_timeout_s=30)
    tdir = home / "prometheus" / "targets"
    with ManagedServer(spec):
        entry = json.loads((tdir / f"vllm--fake-vllm-{port}.json").read_text())[0]
        assert entry["targets"] == [f"127.0.0.1:{port}"]
        assert entry["labels"]["served_model"] == "m:9"
        # it serves no /metrics: Prometheus sees it down (the LLMServiceDown input)
        poll(lambda: promql.scalar(prom, f'up{{instance="127.0.0.1:{port}"}}') == 0.0, what="up == 0")
    assert not (tdir / f"vllm--fake-vllm-{port}.json").exists()


def test_stop_all_stops_prometheus_and_removes_the_targets_of_what_it_stops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_HOME", str(tmp_path / "own-home"))  # stop-all must not reach the module's
    port = free_port()
    spec = ServerSpec(name="fake-vllm", argv=["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                      port=port, health_path="/", scrape_job="vllm", ready_timeout_s=30)
    target = tmp_path / "own-home" / "prometheus" / "targets" / f"vllm--fake-vllm-{port}.json"
    fake = ManagedServer(spec).start()
    prom = ManagedServer(prometheus.prometheus_spec(free_port())).start()
    fake.wait_ready()
    prom.wait_ready()
    assert target.exists() and prom.pid_path.exists()
    assert stop_all_recorded() == 2  # it knows only the pid files
    assert not target.exists()
    for srv in (fake, prom):
        assert srv.proc is not None and srv.proc.wait(timeout=10) is not None


def test_bad_prometheus_settings_are_bad_input(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOLLGATE_PROMETHEUS", str(tmp_path / "nope"))
    with pytest.raises(BadInput, match="TOLLGATE_PROMETHEUS=.*no such file"):
        prometheus.prometheus_spec(free_port())
    monkeypatch.delenv("TOLLGATE_PROMETHEUS")
    monkeypatch.setenv("TOLLGATE_PROMETHEUS_INTERVAL", "2 seconds")
    with pytest.raises(BadInput, match="TOLLGATE_PROMETHEUS_INTERVAL"):
        settings.current()


def test_config_has_a_file_sd_job_per_kind_and_the_rules() -> None:
    cfg = prometheus.prometheus_config(Path("/t"), interval="2s", self_address="127.0.0.1:9")
    jobs = {c["job_name"]: c for c in cfg["scrape_configs"]}
    assert set(jobs) == {"prometheus", "tollgate-gateway", "vllm", "airflow"}
    assert jobs["vllm"]["file_sd_configs"][0]["files"] == ["/t/vllm--*.json"]
    assert cfg["global"]["scrape_interval"] == cfg["global"]["evaluation_interval"] == "2s"
    assert cfg["rule_files"] == [str(prometheus.RULES_DIR / "*.yaml")]
