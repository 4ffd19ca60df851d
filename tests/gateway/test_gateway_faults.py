"""Bad input and faults against the real gateway (2 worker processes) in front of small fake upstreams.

Every call has a deadline; every refusal is checked for its status, its OpenAI-shaped message,
and for what it must not do (change the weight, lose a log record). The request log goes to a
real SeaweedFS through a forwarder the test switches off and on (S3 down during a flush).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from evals import requestlog
from evals.launcher import ManagedServer, free_port
from evals.launcher.gateway import admin_url, gateway_spec, write_config
from gateway.client import AdminClient, AdminError
from tests.fixtures.fault_stub import FaultStub
from tests.gateway.helpers import Forwarder, call, chat, metric_sum, wait_for

pytestmark = pytest.mark.integration

STUB_MODEL = "stub-model:1"


class Mode:
    """A switchable fault plan for a FaultStub."""

    def __init__(self, value: str = "ok") -> None:
        self.value = value

    def __call__(self, n: int, body: dict) -> str:
        return self.value


@pytest.fixture(scope="module")
def stubs():
    stable_mode, canary_mode = Mode(), Mode()
    with FaultStub(plan=stable_mode, responder=lambda b: "one two three four", models=(STUB_MODEL,),
                   slow_s=2.0) as stable, \
         FaultStub(plan=canary_mode, responder=lambda b: "canary words here", models=(STUB_MODEL,),
                   slow_s=2.0) as canary:
        yield {"stable": stable, "canary": canary, "stable_mode": stable_mode, "canary_mode": canary_mode}


@pytest.fixture(scope="module")
def s3_forwarder(s3_server):
    host, port = s3_server.endpoint.rsplit("//", 1)[1].split(":")
    fwd = Forwarder(free_port(), (host, int(port)))
    fwd.on()
    yield fwd
    fwd.off()


@pytest.fixture(scope="module")
def gw(stubs, s3_server, s3_forwarder, tmp_path_factory):
    work = tmp_path_factory.mktemp("gw")
    token = secrets.token_urlsafe(16)
    prefix = f"gwtest-{secrets.token_hex(4)}"
    cfg = write_config(
        work / "gateway.json", model="m", stable_url=stubs["stable"].base_url, stable_version="1",
        served_model=STUB_MODEL, routing_file="routing.json",
        limits={"max_body_bytes": 4096, "max_tokens": 256},
        timeouts={"connect_s": 1.0, "first_byte_s": 1.0, "read_s": 2.5},
        prices={"default": {"input_per_1k": 0.001, "output_per_1k": 0.002}},
        request_log={"dest": f"s3://{s3_server.bucket}/{prefix}", "spool_dir": "spool", "flush_s": 0.3,
                     "batch_rows": 50})
    env = s3_server.env(f"http://127.0.0.1:{s3_forwarder.port}")
    spec = gateway_spec(cfg, port=free_port(), admin_port=free_port(), workers=2, admin_token=token,
                        name=f"gateway-test-{prefix}", env=env)
    with ManagedServer(spec) as srv:
        yield {"port": spec.port, "admin": AdminClient(admin_url(spec), token), "admin_url": admin_url(spec),
               "work": work, "dest": f"s3://{s3_server.bucket}/{prefix}", "server": srv, "s3": s3_server,
               "stubs": stubs}


@pytest.fixture(autouse=True)
def _reset(request, stubs):
    stubs["stable_mode"].value = stubs["canary_mode"].value = "ok"
    yield
    stubs["stable_mode"].value = stubs["canary_mode"].value = "ok"


def _error(reply, status: int, code: str) -> dict:
    assert reply.status == status, (reply.status, reply.body)
    err = reply.json()["error"]
    assert err["code"] == code and err["message"] and err["type"]
    assert reply.headers.get("x-request-id")
    return err


# -- bad input ------------------------------------------------------------------------------------


def test_streaming_through_the_gateway(gw) -> None:
    r = chat(gw["port"], user="alice")
    assert r.status == 200 and r.headers["x-tollgate-arm"] == "stable"
    assert r.headers["x-tollgate-model-version"] == "1" and r.headers["x-request-id"]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in r.events[:-1] if e.get("choices"))
    assert text == "one two three four" and r.events[-1] == "[DONE]"
    assert not any("usage" in e for e in r.events[:-1] if isinstance(e, dict) and not e.get("choices"))


def test_malformed_json(gw) -> None:
    err = _error(call(gw["port"], "/v1/chat/completions", raw=b'{"model": "m", "messages": [}'), 400, "invalid_json")
    assert "not valid JSON" in err["message"]


def test_unknown_model(gw) -> None:
    err = _error(chat(gw["port"], model="gpt-9"), 404, "model_not_found")
    assert "'gpt-9' does not exist" in err["message"]


def test_oversized_body(gw) -> None:
    err = _error(chat(gw["port"], "x" * 10_000), 400, "request_too_large")
    assert "4096 bytes" in err["message"]
    assert chat(gw["port"]).status == 200  # the gateway is fine afterwards


def test_max_tokens_above_the_cap(gw) -> None:
    err = _error(chat(gw["port"], max_tokens=100_000), 400, "max_tokens_too_large")
    assert err["param"] == "max_tokens" and "256" in err["message"]
    _error(chat(gw["port"], max_tokens=-3), 400, "invalid_value")


def test_admin_token_and_weight_bounds(gw) -> None:
    admin: AdminClient = gw["admin"]
    stubs = gw["stubs"]
    before = admin.set_canary(stubs["canary"].base_url, "2", 0, served_model=STUB_MODEL)
    assert before["canary"]["version"] == "2" and before["weight"] == 0
    for bad_token in ("", "wrong"):
        with pytest.raises(AdminError) as err:
            AdminClient(gw["admin_url"], bad_token).set_weight(50)
        assert err.value.status == 401
    for bad in (-1, 101, 1000):
        with pytest.raises(AdminError) as err:
            admin.set_weight(bad)
        assert err.value.status == 400 and "between 0 and 100" in str(err.value)
    with pytest.raises(AdminError):
        admin._call("PUT", "/admin/weight", {"weight": "50"})
    after = admin.state()
    assert (after["weight"], after["generation"]) == (0, before["generation"])
    assert json.loads((gw["work"] / "routing.json").read_text())["weight"] == 0
    admin.remove_canary()


def test_a_new_canary_is_scraped_at_zero_before_its_first_request(gw) -> None:
    """increase() cannot see the increment that creates a series: the canary's must exist at 0 first."""
    from prometheus_client.parser import text_string_to_metric_families

    admin: AdminClient = gw["admin"]
    admin.set_canary(gw["stubs"]["canary"].base_url, "7", 0, served_model=STUB_MODEL)
    text = call(gw["port"], "/metrics", method="GET").body.decode()
    seen = {(s.name, s.labels.get("status") or s.labels.get("type") or s.labels.get("le")): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.labels.get("arm") == "canary" and s.labels.get("version") == "7"}
    for key in (("llm_requests_total", "200"), ("llm_requests_total", "500"), ("llm_errors_total", "upstream_5xx"),
                ("llm_errors_total", "upstream_connect"), ("llm_fallback_total", None)):
        assert seen.get(key) == 0.0, (key, sorted(seen))
    assert any(name == "llm_time_to_first_token_seconds_bucket" for name, _ in seen)
    admin.remove_canary()


def test_weight_change_reaches_every_worker_without_dropping_a_stream(gw) -> None:
    admin: AdminClient = gw["admin"]
    stubs = gw["stubs"]
    admin.set_canary(stubs["canary"].base_url, "2", 0, served_model=STUB_MODEL)
    stubs["stable_mode"].value = "slow_ttft"  # a stream whose words come after 2 s
    slow: dict = {}
    t = threading.Thread(target=lambda: slow.update(r=chat(gw["port"], user="u-slow", timeout=20)))
    t.start()
    time.sleep(0.5)  # let the stream start on stable before the change
    stubs["stable_mode"].value = "ok"
    admin.set_weight(100)
    # every new request (over fresh connections, spread over both workers) goes to the canary
    wait_for(lambda: all(chat(gw["port"], user=f"u{i}").headers["x-tollgate-arm"] == "canary" for i in range(8)),
             10, "the canary weight to apply")
    t.join(20)
    r = slow["r"]
    assert r.status == 200 and r.headers["x-tollgate-arm"] == "stable" and r.events[-1] == "[DONE]"
    admin.remove_canary()


# -- upstream faults ------------------------------------------------------------------------------------


def test_canary_failing_before_first_byte_falls_back_to_stable(gw) -> None:
    admin: AdminClient = gw["admin"]
    stubs = gw["stubs"]
    admin.set_canary(stubs["canary"].base_url, "2", 100, served_model=STUB_MODEL)
    before = metric_sum(gw["port"], "llm_fallback_total", arm="canary", version="2")
    stubs["canary_mode"].value = "http_500"
    r = chat(gw["port"], user="fb1")
    assert r.status == 200 and r.headers["x-tollgate-arm"] == "stable" and r.events[-1] == "[DONE]"
    dead = free_port()
    admin.set_canary(f"http://127.0.0.1:{dead}", "3", 100, served_model=STUB_MODEL)  # refused
    r = chat(gw["port"], user="fb2", stream=False)
    assert r.status == 200 and r.headers["x-tollgate-arm"] == "stable"
    assert metric_sum(gw["port"], "llm_fallback_total", arm="canary", version="2") == before + 1
    assert metric_sum(gw["port"], "llm_fallback_total", arm="canary", version="3") >= 1
    admin.remove_canary()


def test_stable_refused(gw) -> None:
    admin: AdminClient = gw["admin"]
    good = admin.state()["stable"]
    admin.set_stable(f"http://127.0.0.1:{free_port()}", "1", served_model=STUB_MODEL)
    try:
        t0 = time.monotonic()
        err = _error(chat(gw["port"]), 502, "upstream_connect")
        assert "connect to 127.0.0.1" in err["message"] and time.monotonic() - t0 < 5
        assert metric_sum(gw["port"], "llm_errors_total", type="upstream_connect") >= 1
    finally:
        admin.set_stable(good["url"], good["version"], served_model=STUB_MODEL)


def test_upstream_reset_mid_stream_ends_the_client_stream(gw) -> None:
    gw["stubs"]["stable_mode"].value = "close"
    t0 = time.monotonic()
    r = chat(gw["port"], timeout=10)
    assert time.monotonic() - t0 < 5
    assert r.status == 200  # the head was already sent
    assert r.events[0]["choices"][0]["delta"]["content"] == "one"
    assert r.events[-1]["error"]["code"] == "upstream_reset" and "[DONE]" not in r.events
    wait_for(lambda: metric_sum(gw["port"], "llm_errors_total", type="upstream_reset") >= 1, 5, "the error metric")


def test_slow_upstream_times_out(gw) -> None:
    gw["stubs"]["stable_mode"].value = "slow_ttft"
    t0 = time.monotonic()
    err = _error(chat(gw["port"], stream=False, timeout=10), 504, "upstream_timeout")
    assert time.monotonic() - t0 < 3 and "1 s" in err["message"]
    gw["stubs"]["stable_mode"].value = "stall"  # first chunk, then silence
    r = chat(gw["port"], timeout=10)
    assert r.status == 200 and r.events[-1]["error"]["code"] == "upstream_timeout"
    assert "2.5 s" in r.events[-1]["error"]["message"] and time.monotonic() - t0 < 8


def test_upstream_5xx_is_passed_on(gw) -> None:
    gw["stubs"]["stable_mode"].value = "http_503"
    r = chat(gw["port"])
    assert r.status == 503 and r.headers["x-tollgate-arm"] == "stable"
    assert metric_sum(gw["port"], "llm_errors_total", type="upstream_5xx") >= 1


# -- request log --------------------------------------------------------------------------------------


def test_s3_down_during_flush_loses_no_record(gw, s3_forwarder) -> None:
    port = gw["port"]
    s3_forwarder.off()
    try:
        ids = []
        for i in range(30):
            r = chat(port, f"order {i}, mail me at jo{i}@corp.io", user=f"log-{i}", metadata={"topic": "orders"})
            assert r.status == 200
            ids.append(r.headers["x-request-id"])
        fb = call(port, "/v1/feedback", {"request_id": ids[0], "score": 0.75, "reference": "ok"})
        assert fb.status == 202 and fb.json()["known_request"] is True
        wait_for(lambda: metric_sum(port, "tollgate_gateway_request_log_upload_errors_total") >= 1, 20,
                 "a failed upload")
        assert metric_sum(port, "tollgate_gateway_request_log_spool_files") >= 1
    finally:
        s3_forwarder.on()
    client = gw["s3"].client()
    seen: dict[str, object] = {}

    def everything_uploaded() -> bool:
        # The spool gauge counts Parquet files only: rows still in a worker or in a JSON-lines
        # file are not in it, so "drained" is judged by the records themselves, with a deadline.
        now = datetime.now(UTC)
        table = requestlog.read_window(gw["dest"], now - timedelta(minutes=10), now + timedelta(minutes=1),
                                       client=client)
        seen["rows"] = requestlog.rows(table)
        seen["ids"] = {r["request_id"] for r in seen["rows"] if r["kind"] == "request"}
        feedback = any(r["kind"] == "feedback" and r["request_id"] == ids[0] for r in seen["rows"])
        return set(ids) <= seen["ids"] and feedback

    try:
        wait_for(everything_uploaded, 60, "every record in S3 after it came back")
    except AssertionError:
        raise AssertionError(f"lost {len(set(ids) - seen.get('ids', set()))} records") from None
    wait_for(lambda: metric_sum(port, "tollgate_gateway_request_log_spool_files") == 0, 30, "the spool to drain")
    rows = seen["rows"]
    got = {r["request_id"]: r for r in rows if r["kind"] == "request"}
    row = got[ids[3]]
    assert row["prompt_text"] == "user: order 3, mail me at [REDACTED:email]" and row["redacted"] is True
    assert row["topic"] == "orders" and row["arm"] == "stable" and row["model_version"] == "1"
    assert row["status"] == 200 and row["output_tokens"] > 0 and row["user_hash"]
    feedback = [r for r in rows if r["kind"] == "feedback" and r["request_id"] == ids[0]]
    assert feedback and feedback[0]["feedback_score"] == 0.75 and feedback[0]["reference"] == "ok"
    assert metric_sum(port, "llm_quality_score_count", version="1", arm="stable") >= 1


# -- limits --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(stubs, tmp_path_factory):
    work = tmp_path_factory.mktemp("gw-limits")
    cfg = write_config(work / "gateway.json", model="m", stable_url=stubs["stable"].base_url, stable_version="1",
                       served_model=STUB_MODEL,
                       limits={"rate_limit_rps": 2, "rate_limit_burst": 3, "token_budget_per_min": 0},
                       request_log={"enabled": False})
    spec = gateway_spec(cfg, port=free_port(), admin_port=free_port(), workers=2, name="gateway-test-limits")
    with ManagedServer(spec):
        yield spec.port


def test_rate_limit_per_key_holds_across_workers(limited) -> None:
    key = {"Authorization": "Bearer k-" + secrets.token_hex(4)}
    codes = [chat(limited, headers=key, stream=False).status for _ in range(6)]
    assert codes[:3] == [200, 200, 200] and 429 in codes[3:]
    r = chat(limited, headers=key, stream=False)
    if r.status == 429:
        assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "rate_limit"
    other = {"Authorization": "Bearer other-" + secrets.token_hex(4)}
    assert chat(limited, headers=other, stream=False).status == 200  # another key is not limited
    # the admin API is off without a token: it says so, and changes nothing
