"""Gateway pieces without servers: config validation, sticky routing, limits, redaction, feedback parsing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evals.errors import BadInput
from gateway.config import load_config, parse_config
from gateway.http import Request
from gateway.proxy import Rejected, _parse_feedback
from gateway.routing import RoutingState, assign, state_from_doc, user_digest
from gateway.safety import Safety
from gateway.shared import Shared

REPO = Path(__file__).resolve().parents[2]
BASE = {"model": "m", "stable": {"url": "http://127.0.0.1:9", "version": "1"}}


def _cfg(**over: object):
    return parse_config({**BASE, **over}, "gw.yaml", Path("/tmp"))


@pytest.mark.parametrize(("over", "message"), [
    ({"weight": 101}, "gw.yaml: weight must be an integer between 0 and 100, got 101"),
    ({"weight": "10"}, "gw.yaml: weight must be an integer between 0 and 100"),
    ({"stable": {"url": "ftp://x", "version": "1"}}, "gw.yaml: stable.url 'ftp://x' is not an http(s)://host[:port] URL"),
    ({"stable": {"url": "http://127.0.0.1:1"}}, "gw.yaml: stable.version is required"),
    ({"limits": {"max_tokens": 0}}, "gw.yaml: limits.max_tokens must be an integer >= 1, got 0"),
    ({"limits": {"max_tokenz": 5}}, "gw.yaml: unknown key(s) limits.max_tokenz"),
    ({"colour": 1}, "gw.yaml: unknown key(s) colour"),
    ({"timeouts": {"read_s": "fast"}}, "gw.yaml: timeouts.read_s must be a number, got 'fast'"),
    ({"request_log": {"dest": "http://x"}}, "gw.yaml: request_log.dest 'http://x' must be s3://BUCKET[/PREFIX] or a folder"),
    ({"prices": {"1": {"input_per_1k": -1}}}, "gw.yaml: prices.1.input_per_1k must be a number >= 0, got -1"),
    ({"canary": {"url": "http://127.0.0.1:2", "version": "2", "weight": 5}}, "gw.yaml: unknown key(s) canary.weight"),
])
def test_config_errors_name_the_field(over, message) -> None:
    with pytest.raises(BadInput, match=re.escape(message)):
        _cfg(**over)


def test_config_defaults_and_prices() -> None:
    cfg = _cfg(prices={"default": {"input_per_1k": 0.5}, "2": {"output_per_1k": 2.0}}, aliases=["m:1"])
    assert cfg.accepted_models == {"m", "m:1"}
    assert cfg.price("2").output_per_1k == 2.0 and cfg.price("9").input_per_1k == 0.5
    assert cfg.limits.max_tokens == 4096 and cfg.request_log.redact is True and cfg.guardrails_enabled


def test_cli_bad_config_exits_2_with_one_line_and_binds_nothing(tmp_path) -> None:
    bad = tmp_path / "gw.yaml"
    bad.write_text(json.dumps({**BASE, "weight": 300}))
    proc = subprocess.run([sys.executable, "-m", "gateway", "--config", str(bad), "--port", "1", "--admin-port", "2"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"gateway: error: {bad}: weight must be an integer between 0 and 100, "
                                                "got 300"]
    missing = subprocess.run([sys.executable, "-m", "gateway", "--config", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_load_config_checks_the_policy_file(tmp_path) -> None:
    p = tmp_path / "gw.yaml"
    p.write_text(json.dumps({**BASE, "guardrails": {"policy": "missing.yaml"}}))
    with pytest.raises(BadInput, match="guardrails.policy"):
        load_config(p)


def _state(weight: int) -> RoutingState:
    cfg = _cfg(canary={"url": "http://127.0.0.1:8", "version": "2"}, weight=weight)
    return RoutingState.from_config(cfg)


@pytest.mark.parametrize("weight", [0, 1, 10, 25, 50, 90, 100])
def test_split_over_many_users_matches_the_weight_within_one_point(weight) -> None:
    state = _state(weight)
    users = [f"user-{i}" for i in range(20_000)]
    share = sum(assign(state, user_digest("m", u)) == "canary" for u in users) / len(users) * 100
    assert abs(share - weight) <= 1.0


def test_assignment_is_sticky_and_monotone_in_the_weight() -> None:
    users = [f"u{i}" for i in range(2000)]
    at10 = {u: assign(_state(10), user_digest("m", u)) for u in users}
    assert at10 == {u: assign(_state(10), user_digest("m", u)) for u in users}  # same user, same arm
    at30 = {u: assign(_state(30), user_digest("m", u)) for u in users}
    assert all(at30[u] == "canary" for u in users if at10[u] == "canary")  # raising never moves canary users back


def test_admin_operations_validate_and_leave_the_state_alone_on_error() -> None:
    s = _state(10)
    for bad in ({"weight": -1}, {"weight": 101}, {"weight": 5.5}, {"weight": True}, {}, []):
        with pytest.raises(BadInput):
            s.with_weight(bad)
    assert s.weight == 10 and s.generation == 0
    s2 = s.with_weight({"weight": 40})
    assert (s2.weight, s2.generation) == (40, 1)
    s3 = s2.without_canary()
    assert s3.canary is None and s3.weight == 0
    with pytest.raises(BadInput, match="no canary"):
        s3.with_weight({"weight": 5})
    with pytest.raises(BadInput, match="url"):
        s3.with_canary({"url": "nope", "version": "3", "weight": 5})
    s4 = s3.with_canary({"url": "http://127.0.0.1:7", "version": "3", "weight": 5})
    assert s4.canary is not None and s4.canary.version == "3" and s4.weight == 5
    assert state_from_doc(s4.as_dict(), "f", "m", 9).same_routing(s4)
    with pytest.raises(BadInput, match="weight 5 without a canary"):
        state_from_doc({**s4.as_dict(), "canary": None}, "f", "m", 9)


def test_shared_rate_limit_and_token_budget() -> None:
    sh = Shared()
    assert [sh.admit(7, 0.0, 2.0, 2.0, 0).ok for _ in range(3)] == [True, True, False]
    v = sh.admit(7, 0.0, 2.0, 2.0, 0)
    assert v.reason == "rate_limit" and v.retry_after_s == pytest.approx(0.5)
    assert sh.admit(7, 0.6, 2.0, 2.0, 0).ok  # refilled
    assert sh.admit(8, 0.0, 2.0, 2.0, 0).ok  # another key has its own bucket
    sh.charge(9, 10.0, 100)
    v = sh.admit(9, 20.0, 0.0, 0.0, 100)
    assert not v.ok and v.reason == "token_budget" and v.retry_after_s == pytest.approx(50.0)
    assert sh.admit(9, 71.0, 0.0, 0.0, 100).ok  # a new minute


def test_shared_routing_publish_and_read() -> None:
    sh = Shared()
    assert sh.generation() == 0
    sh.publish(_state(20).as_dict())
    gen, doc = sh.read()
    assert gen == 1 and doc["weight"] == 20


def test_redaction_of_pii() -> None:
    safety = Safety.load(REPO / "evals" / "policies" / "safety.yaml", True)
    text = "mail jane.doe@corp.io or call +1 415-555-2671, card 4111 1111 1111 1111, ssn 123-45-6789"
    out, changed = safety.redact(text)
    assert changed
    assert "jane.doe" not in out and "4111" not in out and "2671" not in out
    assert "[REDACTED:email]" in out and "[REDACTED:card_number]" in out
    assert safety.redact("order 2 pizzas")[1] is False
    hits, refusal = safety.check("give me a number", "Sure: 4111 1111 1111 1111")
    assert "no-pii-anywhere" in hits and refusal is False
    assert safety.check("x", "I can't help with that.")[1] is True


def _req(body: object) -> Request:
    r = Request()
    r.body = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return r


def test_feedback_parsing() -> None:
    assert _parse_feedback(_req({"request_id": "abc", "label": "up"}))["feedback_score"] == 1.0
    fb = _parse_feedback(_req({"request_id": "abc", "score": 0.25, "reference": "Paris"}))
    assert fb == {"request_id": "abc", "feedback_score": 0.25, "feedback_label": None, "reference": "Paris"}
    for bad, field in (({"score": 1}, "request_id"), ({"request_id": "a", "score": 2}, "score"),
                       ({"request_id": "a"}, "score"), ({"request_id": "a", "label": ""}, "label"),
                       (b"{nope", None)):
        with pytest.raises(Rejected) as err:
            _parse_feedback(_req(bad))
        assert err.value.status == 400 and (field is None or err.value.param == field)


def test_spool_rows_convert_and_upload_to_a_folder(tmp_path) -> None:
    import asyncio
    from datetime import UTC, datetime, timedelta

    from evals import requestlog
    from gateway.reqlog import Spooler, Uploader

    spool, dest = tmp_path / "spool", tmp_path / "dest"
    counts: dict[str, int] = {"spooled": 0, "uploaded": 0}

    async def write() -> None:
        sp = Spooler(spool, batch_rows=3, flush_s=60, on_spooled=lambda n: counts.__setitem__("spooled",
                                                                                               counts["spooled"] + n))
        for i in range(7):
            sp.add({"kind": "request", "request_id": f"r{i}", "model": "m", "ts": datetime.now(UTC), "status": 200,
                    "guardrail_hits": ["x"] if i == 0 else []})
        await sp.close()

    asyncio.run(write())
    assert counts["spooled"] == 7 and len(list((spool / "rows").glob("*.jsonl"))) == 3
    up = Uploader(spool, str(dest), 1.0, on_uploaded=lambda n: counts.__setitem__("uploaded", counts["uploaded"] + n))
    assert up.upload_once()[1] == 0
    assert counts["uploaded"] == 7 and not list((spool / "rows").glob("*.jsonl"))
    now = datetime.now(UTC)
    rows = requestlog.rows(requestlog.read_window(dest, now - timedelta(hours=1), now + timedelta(minutes=1)))
    assert sorted(r["request_id"] for r in rows) == [f"r{i}" for i in range(7)]
    assert next(r for r in rows if r["request_id"] == "r0")["guardrail_hits"] == ["x"]
