"""Notifications: the JSON-lines file and a Slack-compatible webhook; a failing webhook changes nothing."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from tollgate import notify


class Hook(http.server.BaseHTTPRequestHandler):
    status = 200
    got: list = []

    def do_POST(self):  # noqa: N802
        self.got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def hook():
    Hook.got, Hook.status = [], 200
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def test_file_and_webhook_receive_the_event(tmp_path, hook):
    file = tmp_path / "n.jsonl"
    url = f"http://127.0.0.1:{hook.server_port}/services/T/B/secret"
    failures = notify.notify("canary_aborted", "Canary of m:2 aborted", ["error_ratio 0.4 > 0.05"],
                             context={"model": "m"}, notifiers=[notify.FileNotifier(file),
                                                                notify.WebhookNotifier(url)])
    assert failures == []
    rec = json.loads(file.read_text())
    assert rec == {"kind": "canary_aborted", "subject": "Canary of m:2 aborted", "lines": ["error_ratio 0.4 > 0.05"],
                   "model": "m"}
    [payload] = Hook.got
    assert payload["text"].startswith("*Canary of m:2 aborted*") and payload["blocks"][0]["type"] == "section"


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/unreachable", "not a url", "BAD500"])
def test_a_failing_webhook_never_raises_and_the_file_still_gets_it(tmp_path, hook, url):
    Hook.status = 500
    if url == "BAD500":
        url = f"http://127.0.0.1:{hook.server_port}/hook"
    file = tmp_path / "n.jsonl"
    failures = notify.notify("rolled_back", "Rollback", ["x"],
                             notifiers=[notify.WebhookNotifier(url, timeout_s=2), notify.FileNotifier(file)])
    assert len(failures) == 1 and "WebhookNotifier" in failures[0]
    assert json.loads(file.read_text())["kind"] == "rolled_back"


def test_configured_notifiers_follow_the_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("TOLLGATE_NOTIFY_WEBHOOK", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("TOLLGATE_NOTIFIER", "log")
    kinds = [type(n).__name__ for n in notify.configured()]
    assert kinds == ["LogNotifier", "WebhookNotifier"]
    assert "/hook" not in repr(notify.configured()[1])  # the secret path never reaches a log line
