"""python -m evals.canary end to end: a real vLLM arm, a fault-injecting stub arm, bad input."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evals.canary.cli import build_policy
from evals.canary.stats import CANARY, STABLE, assign_arm
from evals.canary.traffic import DEFAULT_TRAFFIC, Arm, arm_config, load_traffic, render, request_body
from evals.errors import BadInput
from evals.settings import REPO_ROOT

EMBEDDED = REPO_ROOT / "thresholds" / "embedded" / "canary.yaml"
PRODUCTION = REPO_ROOT / "thresholds" / "canary.yaml"
DEPLOYMENT = "smollm2-orders-canary"
ORACLE = {item.prompt: item.reference for item in load_traffic(DEFAULT_TRAFFIC)}


class StubArm:
    """A tiny OpenAI-compatible arm on 127.0.0.1.

    `fail` answers 500. `oracle` answers a traffic line it knows with its reference (a
    perfect model) and anything else by repeating the user's message.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._send(200, {"data": [{"id": "stub:1"}]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests += 1
                if stub.mode == "fail":
                    self._send(500, {"error": "injected fault"})
                    return
                line = body["messages"][-1]["content"]
                answer = ORACLE.get(line, line)
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": answer}}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> StubArm:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture()
def failing_arm() -> Iterator[StubArm]:
    with StubArm("fail") as arm:
        yield arm


@pytest.fixture()
def echo_arm() -> Iterator[StubArm]:
    with StubArm("oracle") as arm:
        yield arm


def run_canary(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evals.canary", "--deployment", DEPLOYMENT, *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, check=False)


def gate_check(results: Path, thresholds: Path) -> int:
    return subprocess.run([sys.executable, "-m", "evals.gate_check", "--results", str(results),
                           "--threshold-file", str(thresholds)], capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT, check=False).returncode


def test_real_canary_against_vllm_promotes_and_gate_check_agrees(vllm_server, tmp_path: Path) -> None:
    out = tmp_path / "verdict.json"
    report = tmp_path / "canary.md"
    proc = run_canary("--duration", "180", "--stable-endpoint", vllm_server.base_url,
                      "--canary-endpoint", vllm_server.openai_url, "--canary-weight", "0.5",
                      "--threshold-file", str(EMBEDDED), "--model", vllm_server.model,
                      "--output", str(out), "--report", str(report))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    m, samples = data["metrics"], data["samples"]
    assert data["verdict"]["decision"] == "promote" and data["verdict"]["promote"] is True
    assert m["stable_requests"] + m["canary_requests"] == 64 == len(samples)  # the whole sample was replayed
    assert m["canary_error_rate"] == 0.0 and m["canary_significant_quality_regression"] == 0.0
    assert 0.0 < m["canary_quality"] <= 1.0 and m["canary_min_arm_samples"] >= 15
    for s in samples:  # each user landed on the arm its sticky hash says
        assert s["arm"] == assign_arm(s["user_id"], 0.5, DEPLOYMENT)
        assert s["ok"] and isinstance(s["answer"], str) and 0.0 <= s["quality"] <= 1.0
    arms_by_user: dict[str, set[str]] = {}
    for s in samples:
        arms_by_user.setdefault(s["user_id"], set()).add(s["arm"])
    assert all(len(a) == 1 for a in arms_by_user.values())
    assert data["meta"]["suite"] == "canary" and data["meta"]["version"] == "1"
    assert len(data["meta"]["dataset_sha256"]) == 64
    assert "PROMOTE" in report.read_text()
    assert "PROMOTE -> promote" in proc.stdout
    assert gate_check(out, EMBEDDED) == 0
    # The production gates want 1000 samples per arm: the same evidence does not pass them.
    assert gate_check(out, PRODUCTION) == 1


def test_failing_canary_arm_rolls_back(vllm_server, failing_arm: StubArm, tmp_path: Path) -> None:
    out = tmp_path / "verdict.json"
    proc = run_canary("--duration", "180", "--stable-endpoint", vllm_server.openai_url,
                      "--canary-endpoint", failing_arm.url, "--canary-weight", "0.5",
                      "--threshold-file", str(EMBEDDED), "--output", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    m = data["metrics"]
    assert data["verdict"]["decision"] == "rollback" and data["verdict"]["action"] == "rollback"
    assert m["canary_error_rate"] == 1.0 and m["stable_error_rate"] == 0.0
    assert failing_arm.requests == m["canary_requests"] > 0
    assert any("error rate 100.00% > 2.00%" in r for r in data["verdict"]["reasons"])
    assert {s["error"] for s in data["samples"] if s["arm"] == CANARY} == {"http_500"}
    assert all(s["ok"] for s in data["samples"] if s["arm"] == STABLE)
    assert gate_check(out, EMBEDDED) == 1


def test_too_little_evidence_fails_closed(echo_arm: StubArm, tmp_path: Path) -> None:
    out = tmp_path / "verdict.json"
    proc = run_canary("--duration", "60", "--stable-endpoint", echo_arm.url, "--canary-endpoint", echo_arm.url,
                      "--quality-threshold", "0.0", "--min-samples", "1000", "--output", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["verdict"]["decision"] == "inconclusive" and data["verdict"]["action"] == "rollback"
    assert any("need 1000 per arm" in r for r in data["verdict"]["reasons"])
    # The flags replaced the production file's bounds, in the decision and in the recorded gates.
    gates = {g["metric"]: g["bound"] for g in data["verdict"]["gates"]}
    assert gates["canary_quality"] == 0.0 and gates["canary_min_arm_samples"] == 1000.0
    assert data["meta"]["threshold_file"].endswith("thresholds/canary.yaml")


def test_duration_bounds_the_replay(echo_arm: StubArm, tmp_path: Path) -> None:
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text("".join(json.dumps({"user_id": f"u{i}", "prompt": "x", "reference": "x"}) + "\n"
                               for i in range(100000)))
    out = tmp_path / "verdict.json"
    proc = run_canary("--duration", "2", "--traffic", str(traffic), "--stable-endpoint", echo_arm.url,
                      "--canary-endpoint", echo_arm.url, "--min-samples", "1", "--quality-threshold", "0.5",
                      "--output", str(out), timeout=120)
    data = json.loads(out.read_text())
    assert 0 < data["meta"]["requests_sent"] < 100000
    assert data["meta"]["duration_s"] < 30
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the stub repeats "x", the reference


def test_arm_configs_apply_each_versions_prompt(echo_arm: StubArm, tmp_path: Path) -> None:
    stable_cfg = tmp_path / "stable.json"
    stable_cfg.write_text(json.dumps({"model": "orders", "version": "1", "template": "{{prompt}}",
                                      "generation_params": {"temperature": 0.0}}))
    # v2: same weights, a prompt that breaks the answer: the canary must lose on quality.
    # (Given inline, as a DAG templates it into the argument.)
    canary_cfg = json.dumps({"model": "orders", "version": "2", "template": "order: {{ prompt }}",
                             "generation_params": {"temperature": 0.0, "max_tokens": 8}})
    out = tmp_path / "verdict.json"
    proc = run_canary("--stable-endpoint", echo_arm.url, "--canary-endpoint", echo_arm.url,
                      "--stable-config", str(stable_cfg), "--canary-config", canary_cfg,
                      "--canary-weight", "0.5", "--threshold-file", str(EMBEDDED), "--quality-threshold", "0.0",
                      "--min-samples", "5", "--output", str(out))
    data = json.loads(out.read_text())
    assert data["meta"]["version"] == "2" and data["meta"]["stable_model"] == "orders:1"
    assert data["metrics"]["stable_quality"] == 1.0  # v1's prompt passes the line through: perfect
    assert data["metrics"]["canary_quality"] < 0.5
    assert all(s["answer"].startswith("order: ") for s in data["samples"] if s["arm"] == CANARY)
    # Per-sample scores where evals.gates finds them: a `confidence` gate judges a bootstrap bound.
    assert all(s["scores"] == {f"{s['arm']}_quality": s["quality"]} for s in data["samples"])
    bound = tmp_path / "ci.yaml"
    bound.write_text("gates:\n  q:\n    metric: stable_quality\n    min: 0.99\n    confidence: 0.95\n")
    assert gate_check(out, bound) == 0  # every stable answer scored 1.0
    bound.write_text("gates:\n  q:\n    metric: canary_quality\n    min: 0.5\n    confidence: 0.95\n")
    assert gate_check(out, bound) == 1
    assert data["metrics"]["canary_significant_quality_regression"] == 1.0
    assert proc.returncode == 1 and data["verdict"]["decision"] == "rollback"


def test_request_body_maps_generation_parameters() -> None:
    arm = Arm("canary", "http://x/v1", "m:2", [{"role": "user", "content": "Q: {{prompt}}"}],
                     {"temperature": 0.2, "max_tokens": 16, "stop_sequences": ["\n"], "model_name": "ignored"})
    body = request_body(arm, "m:2", "lg pep x1")
    assert body == {"model": "m:2", "messages": [{"role": "user", "content": "Q: lg pep x1"}],
                    "temperature": 0.2, "max_tokens": 16, "stop": ["\n"]}


@pytest.mark.parametrize(("args", "needle"), [
    (["--traffic", "no/such.jsonl"], "--traffic no/such.jsonl: no such file"),
    (["--canary-weight", "0.9"], "--canary-weight"),
    (["--canary-weight", "0.05"], "--canary-weight"),
    (["--duration", "0"], "--duration"),
    (["--quality-threshold", "1.5"], "--quality-threshold"),
    (["--threshold-file", "thresholds/nope.yaml"], "thresholds/nope.yaml"),
    (["--stable-endpoint", "ftp://x", "--canary-endpoint", "http://127.0.0.1:9/v1"], "--stable-endpoint"),
    (["--model", "no version"], "--model"),
    (["--canary-config", "{not json"], "--canary-config"),
    (["--canary-config", '{"template": 5}'], "template must be"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args: list[str], needle: str, tmp_path: Path) -> None:
    out = tmp_path / "verdict.json"
    base = ["--stable-endpoint", "http://127.0.0.1:9/v1", "--canary-endpoint", "http://127.0.0.1:9/v1"]
    proc = run_canary(*(base if "--stable-endpoint" not in args else []), *args, "--output", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr
    assert not out.exists()


def test_a_gate_on_a_metric_no_canary_writes_is_bad_input(tmp_path: Path) -> None:
    typo = tmp_path / "canary.yaml"
    typo.write_text(EMBEDDED.read_text().replace("metric: canary_error_rate_delta", "metric: canary_eror_rate_delta"))
    out = tmp_path / "verdict.json"
    proc = run_canary("--stable-endpoint", "http://127.0.0.1:9/v1", "--canary-endpoint", "http://127.0.0.1:9/v1",
                      "--threshold-file", str(typo), "--output", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"{typo}: gates.error_rate_vs_stable.metric: unknown metric " \
        "'canary_eror_rate_delta' for the canary suite" in lines[0]
    assert not out.exists()
    # every name a canary writes is accepted, also those only the progressive canary writes
    ok = tmp_path / "ok.yaml"
    ok.write_text("gates:\n  p95: {metric: canary_latency_p95_s, max: 2}\n")
    _, thresholds = build_policy(_ns(threshold_file=str(ok)))
    assert "canary_latency_p95_s" in {g.metric for g in thresholds.gates}


def test_bad_traffic_line_and_deployment_name_are_named(tmp_path: Path) -> None:
    traffic = tmp_path / "t.jsonl"
    traffic.write_text('{"user_id": "u1", "prompt": "a"}\n{"user_id": "", "prompt": "b"}\n')
    proc = run_canary("--traffic", str(traffic), "--stable-endpoint", "http://127.0.0.1:9",
                      "--canary-endpoint", "http://127.0.0.1:9")
    assert proc.returncode == 2 and f"{traffic} line 2: user_id" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "evals.canary", "--deployment", "smollm2-orders"],
                          capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False)
    assert proc.returncode == 2 and "NAME-canary" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def _ns(**kw: object) -> argparse.Namespace:
    base = {"threshold_file": None, "quality_threshold": None, "error_rate_threshold": None,
            "error_rate_delta_threshold": None, "min_samples": None, "alpha": 0.05, "min_effect_size": 0.2}
    return argparse.Namespace(**{**base, **kw})


def test_policy_comes_from_file_then_flags() -> None:
    policy, thresholds = build_policy(_ns(threshold_file=str(EMBEDDED)))
    assert (policy.quality_min, policy.min_samples, policy.error_rate_max) == (0.40, 15, 0.02)
    policy, thresholds = build_policy(_ns(threshold_file=str(EMBEDDED), quality_threshold=0.85,
                                                 error_rate_threshold=0.05, min_samples=3))
    assert (policy.quality_min, policy.error_rate_max, policy.min_samples) == (0.85, 0.05, 3)
    bounds = {g.metric: g.bound for g in thresholds.gates}
    assert bounds["canary_quality"] == 0.85 and bounds["canary_min_arm_samples"] == 3
    assert "canary_significant_quality_regression" in bounds  # the file's other gates are kept
    default, _ = build_policy(_ns())
    assert default.min_samples == 1000 and default.quality_min == 0.85  # thresholds/canary.yaml


def test_prompt_set_templates_are_rendered_like_evals_run(tmp_path: Path) -> None:
    """The embedded demo registers whole evals prompt sets (YAML) as the versions' prompts."""
    import yaml

    from evals.suites import prompts

    base = yaml.safe_load(prompts.default_prompts("quality").read_text())
    base["params"]["temperature"] = 0.7
    base["tasks"]["order_normalization"]["few_shot"] = []
    cfg = {"model": "smollm2-orders", "version": "1", "template": yaml.safe_dump(base),
           "generation_params": base["params"]}
    served, template, params, ref = arm_config(json.dumps(cfg), "--stable-config")
    assert (served, ref) == ("smollm2-orders:1", "smollm2-orders:1")
    messages = render(template, "lg pep pza x2")
    assert [m["role"] for m in messages] == ["system", "user"]  # v1: no few-shot turns
    assert messages[-1]["content"] == "lg pep pza x2"
    assert params["temperature"] == 0.7 and params["max_tokens"] == 24  # the task's own override wins
    # No config: the quality suite's order-normalization prompt, few-shot turns included.
    _, default, default_params, _ = arm_config(None, "--canary-config")
    rendered = render(default, "sm coke x1")
    assert rendered[0]["role"] == "system" and len(rendered) > 3 and rendered[-1]["content"] == "sm coke x1"
    assert default_params["temperature"] == 0.0
    broken = {"template": "tasks:\n  order_normalization:\n    user: no placeholder\n"}
    with pytest.raises(BadInput, match="template"):
        arm_config(json.dumps(broken), "--canary-config")
