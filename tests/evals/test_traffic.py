"""python -m evals.traffic against a small recording OpenAI-compatible stub: replay, rate, bounds, feedback, drift."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evals import traffic
from evals.datasets.traffic import _generate
from evals.errors import BadInput

ANSWERS = {"sm pep pza x2": "2x Small Pepperoni Pizza"}


class _Stub(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _StubServer

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.seen.append((self.path, dict(self.headers), body))
        if self.path == "/v1/feedback":
            self._send(200, b'{"ok": true}', "application/json")
            return
        if self.server.fail_every and len(self.server.seen) % self.server.fail_every == 0:
            self._send(503, b'{"error": {"message": "busy"}}', "application/json")
            return
        if self.server.delay_s:
            time.sleep(self.server.delay_s)  # a slow server (fault injection), not synchronisation
        prompt = body["messages"][0]["content"]
        answer = ANSWERS.get(prompt, "something else entirely")
        events = [{"choices": [{"delta": {"content": word + " "}, "index": 0}]} for word in answer.split()]
        events.append({"choices": [{"delta": {}, "finish_reason": "stop", "index": 0}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": len(answer.split())}})
        data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        self._send(200, data, "text/event-stream")

    def _send(self, status: int, data: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class _StubServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Stub)
        self.seen: list[tuple[str, dict, dict]] = []
        self.lock = threading.Lock()
        self.fail_every = 0
        self.delay_s = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def stub() -> Iterator[_StubServer]:
    srv = _StubServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def write_prompts(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_replay_sends_users_metadata_and_feedback_with_scores(stub: _StubServer, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", [
        {"prompt": "sm pep pza x2", "user_id": "u1", "reference": "2x Small Pepperoni Pizza", "topic": "orders",
         "language": "en"},
        {"prompt": "where is my order?", "user_id": "u2", "topic": "support", "language": "en"},
        {"prompt": "lg veg pz", "user_id": "u3", "reference": "1x Large Veggie Pizza"},
    ])
    out = tmp_path / "summary.json"
    code = traffic.main(["--endpoint", stub.url, "--model", "m", "--prompts", str(prompts), "--rate", "40",
                         "--requests", "30", "--duration", "20", "--output", str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    chats = [(h, b) for p, h, b in stub.seen if p == "/v1/chat/completions"]
    feedback = [b for p, _, b in stub.seen if p == "/v1/feedback"]
    assert summary["sent"] == len(chats) == 30 and summary["ok"] == 30
    for headers, body in chats:
        assert body["model"] == "m" and body["stream"] is True and body["max_tokens"] == 32
        assert body["user"] in ("u1", "u2", "u3")
        assert len(headers["X-Request-Id"]) == 32
        if body["user"] == "u2":
            assert body["metadata"] == {"topic": "support", "language": "en"}
    ids = {h["X-Request-Id"] for h, _ in chats}
    assert len(ids) == 30
    # feedback for each answered line with a reference, naming its request; exact answer scores 1
    with_ref = [b for h, b in chats if b["user"] in ("u1", "u3")]
    assert len(feedback) == summary["feedback_sent"] == len(with_ref)
    assert {f["request_id"] for f in feedback} <= ids
    scores = {f["reference"]: f["score"] for f in feedback}
    assert scores.get("2x Small Pepperoni Pizza", 1.0) == 1.0
    assert scores.get("1x Large Veggie Pizza", 0.0) < 0.5
    assert json.loads(capsys.readouterr().out)["sent"] == 30


def test_open_loop_rate_and_duration_bound(stub: _StubServer) -> None:
    cfg = traffic.TrafficConfig(endpoint=traffic.check_endpoint(stub.url, False), model="m",
                                base=traffic.load_prompts(_generate.HERE / "steady.jsonl", "--prompts"),
                                rate=20, duration_s=2.0, feedback=False, seed=3)
    t0 = time.monotonic()
    summary = traffic.run_traffic(cfg)
    took = time.monotonic() - t0
    assert took < 5, "it stops by itself after --duration"
    assert 20 <= summary.sent <= 65, summary.sent  # Poisson, 20/s for 2 s
    assert summary.ok == summary.sent and not summary.failed


def test_failures_are_counted_not_hidden(stub: _StubServer, tmp_path: Path) -> None:
    stub.fail_every = 2
    out = tmp_path / "s.json"
    code = traffic.main(["--endpoint", stub.url, "--model", "m", "--rate", "50", "--requests", "20",
                         "--no-feedback", "--output", str(out)])
    summary = json.loads(out.read_text())
    assert code == 0
    assert summary["failures"] == {"http 503": summary["failed"]} and summary["failed"] >= 5
    assert summary["ok"] + summary["failed"] == summary["sent"] == 20
    assert not [p for p, _, _ in stub.seen if p == "/v1/feedback"]


def test_requests_counts_what_was_sent_not_arrivals_skipped_while_busy(stub: _StubServer, tmp_path: Path) -> None:
    # A slow server and one request at a time: most arrivals find it busy. --requests 5
    # still means five requests sent (a loaded machine must not end the run after one).
    stub.delay_s = 0.3
    out = tmp_path / "s.json"
    code = traffic.main(["--endpoint", stub.url, "--model", "m", "--rate", "40", "--requests", "5",
                         "--max-in-flight", "1", "--duration", "60", "--no-feedback", "--output", str(out)])
    summary = json.loads(out.read_text())
    assert code == 0
    assert summary["sent"] == summary["ok"] == 5
    assert summary["skipped_busy"] > 0


def test_user_spread_replays_a_small_file_as_many_sticky_users(stub: _StubServer) -> None:
    base = [traffic.Prompt(prompt="x", user_id="alice"), traffic.Prompt(prompt="y", user_id="bob")]
    runner = traffic.TrafficRunner(traffic.TrafficConfig(
        endpoint=traffic.check_endpoint(stub.url, False), model="m", base=base, user_spread=50, seed=1))
    users = {runner.pick(0.0)[0].user_id for _ in range(2000)}
    assert len(users) == 100 and all(u.split(".")[0] in ("alice", "bob") for u in users)
    plain = traffic.TrafficRunner(traffic.TrafficConfig(
        endpoint=traffic.check_endpoint(stub.url, False), model="m", base=base))
    assert {plain.pick(0.0)[0].user_id for _ in range(200)} == {"alice", "bob"}


def test_drift_scenario_shifts_length_topic_and_language(stub: _StubServer) -> None:
    base = traffic.load_prompts(_generate.HERE / "steady.jsonl", "--prompts")
    drifted = traffic.load_prompts(_generate.HERE / "drift.jsonl", "--drift-prompts")
    runner = traffic.TrafficRunner(traffic.TrafficConfig(
        endpoint=traffic.check_endpoint(stub.url, False), model="m", base=base, drifted=drifted, drift_at=0.5))
    early = [runner.pick(0.0)[0] for _ in range(300)]
    late = [runner.pick(0.9)[0] for _ in range(300)]
    mean = lambda ps: sum(len(p.prompt) for p in ps) / len(ps)  # noqa: E731
    assert mean(late) > 3 * mean(early)
    assert {p.language for p in early} == {"en"}
    assert {"es", "de", "fr"} <= {p.language for p in late}
    assert sum(p.topic == "support" for p in late) > 2 * sum(p.topic == "support" for p in early)


def test_no_server_exits_1_with_failures_counted(tmp_path: Path) -> None:
    from evals.launcher import free_port

    out = tmp_path / "s.json"
    code = traffic.main(["--endpoint", f"http://127.0.0.1:{free_port()}", "--model", "m", "--rate", "50",
                         "--requests", "5", "--output", str(out)])
    assert code == 1
    assert json.loads(out.read_text())["failures"] == {"transport": 5}


@pytest.mark.parametrize(("argv", "message"), [
    (["--endpoint", "http://10.1.2.3:8000"], "not a loopback address"),
    (["--endpoint", "ftp://x"], "not an http"),
    (["--rate", "0"], "--rate"),
    (["--duration", "-1"], "--duration"),
    (["--requests", "0"], "--requests"),
    (["--prompts", "/nonexistent.jsonl"], "/nonexistent.jsonl"),
    (["--drift-prompts", "x.jsonl"], "--drift-prompts needs --scenario drift"),
])
def test_bad_input_exits_2_without_sending(argv: list[str], message: str, stub: _StubServer,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from evals._cli import run_main

    full = ["--model", "m", *(["--endpoint", stub.url] if "--endpoint" not in argv else []), *argv]
    try:
        code = run_main(traffic.main, full)
    except SystemExit as exc:  # argparse's own flag errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not stub.seen


@pytest.mark.parametrize(("line", "message"), [
    ({"user_id": "u"}, "'prompt' must be a non-empty string"),
    ({"prompt": "x"}, "'user_id' must be a non-empty string"),
    ({"prompt": "x", "user_id": "u", "reference": 3}, "'reference' must be a string"),
])
def test_bad_prompt_lines_name_the_line(tmp_path: Path, line: dict, message: str) -> None:
    path = write_prompts(tmp_path / "p.jsonl", [{"prompt": "ok", "user_id": "u"}, line])
    with pytest.raises(BadInput, match=f"line 2: {message}"):
        traffic.load_prompts(path, "--prompts")


def test_shipped_prompt_files_are_the_generator_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = {n: (_generate.HERE / n).read_bytes() for n in ("steady.jsonl", "drift.jsonl")}
    monkeypatch.setattr(_generate, "HERE", tmp_path)
    _generate.main()
    assert {n: (tmp_path / n).read_bytes() for n in shipped} == shipped
