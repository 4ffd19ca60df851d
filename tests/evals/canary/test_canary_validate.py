"""python -m canary.validate: the analysis over a Prometheus HTTP API, its flags and exit codes."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

from evals.canary import analysis as an
from evals.canary.policy import load_policy
from evals.canary.validate import watch
from tests.evals.canary.test_canary_analysis import EMBEDDED, arm_data, fake_prometheus

ROOT = Path(__file__).resolve().parents[3]


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_watch_stops_at_the_first_abort_and_passes_a_healthy_canary():
    policy = load_policy(EMBEDDED)
    clock = FakeClock()
    queried = []

    def query(expr):
        queried.append(expr)
        window = expr.split("[")[1].split("]")[0] if "[" in expr else "30s"
        return fake_prometheus(policy, {"canary": arm_data(errors=50), "stable": arm_data()},
                               window=float(window[:-1]))(expr)

    result, action = watch(policy, query, model="m", weight=25, duration_s=60, clock=clock, sleep=clock.sleep)
    assert action.kind == "abort" and result.phase is an.Phase.FAILED and action.state.analyses == 1

    def good(expr):
        window = expr.split("[")[1].split("]")[0]
        return fake_prometheus(policy, {"canary": arm_data(), "stable": arm_data()}, window=float(window[:-1]))(expr)

    result, action = watch(policy, good, model="m", weight=25, duration_s=20, clock=clock, sleep=clock.sleep)
    assert result.phase is an.Phase.SUCCESSFUL and action.kind == "next" and clock.now >= 1020


class PromHandler(http.server.BaseHTTPRequestHandler):
    answers: dict = {}
    seen: list = []

    def do_POST(self):  # noqa: N802 - evals.promql posts the form
        form = self.rfile.read(int(self.headers["Content-Length"])).decode()
        q = urllib.parse.parse_qs(form)["query"][0]
        self.seen.append(q)
        result = [{"metric": labels, "value": [0, str(v)]} for labels, v in self.answers.get(q, [])]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def prometheus():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PromHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def run_validate(*args, env=None):
    return subprocess.run([sys.executable, "-m", "canary.validate", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, env=env)


def test_cli_matches_the_namespace_and_exits_1_on_a_failing_canary(prometheus, tmp_path):
    policy = load_policy(EMBEDDED)
    answers = {}
    for w in range(1, 31):
        fake = fake_prometheus(policy, {"canary": arm_data(errors=40), "stable": arm_data()}, window=w,
                               namespace="ai-prod")
        answers.update({k.replace('model="m"', 'model="orders"'): v for k, v in fake.answers.items()})
    PromHandler.answers, PromHandler.seen = answers, []
    out = tmp_path / "verdict.json"
    r = run_validate("--deployment", "orders-canary", "--namespace", "ai-prod", "--duration", "2",
                     "--error-rate-threshold", "0.02", "--quality-threshold", "0.3", "--policy", str(EMBEDDED),
                     "--prometheus-url", f"http://127.0.0.1:{prometheus.server_port}", "--output", str(out))
    assert r.returncode == 1, r.stderr
    assert all('namespace="ai-prod"' in q and 'model="orders"' in q for q in PromHandler.seen)
    verdict = json.loads(out.read_text())
    assert verdict["verdict"]["phase"] == "Failed" and verdict["metrics"]["canary_error_rate"] == 0.4
    # the verdict file goes through the gate engine like the replay canary's
    g = subprocess.run([sys.executable, "-m", "evals.gate_check", "--results", str(out), "--threshold-file",
                        str(ROOT / "thresholds" / "embedded" / "canary.yaml")], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert g.returncode == 1, g.stdout + g.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--deployment", "Bad_Name"], "--deployment 'Bad_Name'"),
    (["--deployment", "x-canary", "--namespace", "AI"], "--namespace 'AI'"),
    (["--deployment", "x-canary", "--prometheus-url", "ftp://x"], "--prometheus-url 'ftp://x'"),
    (["--deployment", "x-canary", "--error-rate-threshold", "2"], "--error-rate-threshold"),
])
def test_cli_bad_input_exits_2_with_one_line(args, message):
    r = run_validate(*args)
    last = r.stderr.strip().splitlines()[-1]  # argparse prints its usage first
    assert r.returncode == 2 and message in last and last.startswith(("python -m canary.validate: error:",
                                                                       "canary.validate: error:")), r.stderr


def test_replay_canary_takes_the_namespace_too():
    from evals.canary.cli import build_parser, resolve_endpoints

    args = build_parser().parse_args(["--deployment", "orders-canary", "--namespace", "ai-prod"])
    assert resolve_endpoints(args) == ("http://orders.ai-prod.svc.cluster.local:8000/v1",
                                       "http://orders-canary.ai-prod.svc.cluster.local:8000/v1")
    args = build_parser().parse_args(["--deployment", "orders-canary"])
    assert resolve_endpoints(args) == ("http://orders:8000/v1", "http://orders-canary:8000/v1")
