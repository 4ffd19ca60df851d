"""The matrix's gateway, canary and drift rows: the real gateway (one worker) in front of a
fault stub, its request log going to the session's SeaweedFS through a switchable
forwarder; canary analysis against a Prometheus URL where nothing listens; evals.drift on
files that are not Parquet.

Every row also asserts that the gateway's admin token appears in no log.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from evals.launcher import ManagedServer, free_port
from tests.faults.invariants import no_secret_in
from tests.faults.matrix import Case, cases
from tests.fixtures.airflow import REPO_ROOT
from tests.fixtures.fault_stub import FaultStub

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STUB_MODEL = "stub-model:1"


class Mode:
    def __init__(self) -> None:
        self.value = "ok"

    def __call__(self, n: int, body: dict) -> str:
        return self.value


@pytest.fixture(scope="module")
def gw(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from evals.launcher.gateway import admin_url, gateway_spec, write_config
    from gateway.client import AdminClient
    from tests.gateway.helpers import Forwarder

    work = tmp_path_factory.mktemp("gw-faults")
    mode = Mode()
    host, port = s3_server.endpoint.rsplit("//", 1)[1].split(":")
    fwd = Forwarder(free_port(), (host, int(port)))
    fwd.on()
    token = secrets.token_urlsafe(20)
    prefix = f"faults-gw-{secrets.token_hex(4)}"
    with FaultStub(plan=mode, responder=lambda b: "one two three four", models=(STUB_MODEL,), slow_s=2.0) as stub:
        cfg = write_config(work / "gateway.json", model="m", stable_url=stub.base_url, stable_version="1",
                           served_model=STUB_MODEL, timeouts={"connect_s": 1.0, "first_byte_s": 1.0, "read_s": 2.5},
                           request_log={"dest": f"s3://{s3_server.bucket}/{prefix}", "spool_dir": "spool",
                                        "flush_s": 0.3, "batch_rows": 20})
        spec = gateway_spec(cfg, port=free_port(), admin_port=free_port(), workers=1, admin_token=token,
                            name=f"gateway-faults-{prefix}", env=s3_server.env(f"http://127.0.0.1:{fwd.port}"))
        with ManagedServer(spec, log_dir=work / "logs"):
            yield {"port": spec.port, "admin": AdminClient(admin_url(spec), token), "admin_url": admin_url(spec),
                   "token": token, "mode": mode, "fwd": fwd, "s3": s3_server,
                   "dest": f"s3://{s3_server.bucket}/{prefix}", "logs": work}
    fwd.off()


def reset_mid_stream(gw: dict[str, Any], tmp: Path) -> None:
    from tests.gateway.helpers import chat, metric_sum, wait_for

    gw["mode"].value = "close"
    r = chat(gw["port"], timeout=10)
    assert r.status == 200 and r.events[0]["choices"][0]["delta"]["content"] == "one"
    assert r.events[-1]["error"]["code"] == "upstream_reset" and "[DONE]" not in r.events
    wait_for(lambda: metric_sum(gw["port"], "llm_errors_total", type="upstream_reset") >= 1, 5, "the error metric")


def upstream_503(gw: dict[str, Any], tmp: Path) -> None:
    from tests.gateway.helpers import chat, metric_sum

    gw["mode"].value = "http_503"
    r = chat(gw["port"])
    assert r.status == 503 and r.headers["x-tollgate-arm"] == "stable"
    assert metric_sum(gw["port"], "llm_errors_total", type="upstream_5xx") >= 1


def bad_token(gw: dict[str, Any], tmp: Path) -> None:
    from gateway.client import AdminClient

    before = gw["admin"].state()
    with pytest.raises(Exception) as info:
        AdminClient(gw["admin_url"], "not-" + gw["token"]).set_weight(50)
    assert "401" in str(info.value) or "403" in str(info.value), info.value
    assert gw["admin"].state() == before


def s3_down(gw: dict[str, Any], tmp: Path) -> None:
    from evals import requestlog
    from tests.gateway.helpers import chat, metric_sum, wait_for

    port = gw["port"]
    gw["fwd"].off()
    try:
        ids = []
        for i in range(12):
            r = chat(port, f"order {i}", user=f"faults-{i}")
            assert r.status == 200
            ids.append(r.headers["x-request-id"])
        wait_for(lambda: metric_sum(port, "tollgate_gateway_request_log_upload_errors_total") >= 1, 20,
                 "a failed upload")
    finally:
        gw["fwd"].on()
    wait_for(lambda: metric_sum(port, "tollgate_gateway_request_log_spool_files") == 0, 30, "the spool to drain")
    now = datetime.now(UTC)
    table = requestlog.read_window(gw["dest"], now - timedelta(minutes=10), now + timedelta(minutes=1),
                                   client=gw["s3"].client())
    got = {r["request_id"] for r in requestlog.rows(table) if r["kind"] == "request"}
    assert set(ids) <= got, f"lost {len(set(ids) - got)} request-log records"


def prometheus_unreachable(gw: dict[str, Any], tmp: Path) -> None:
    from evals.canary.analysis import analyse, prometheus_query
    from evals.canary.policy import load_policy

    policy = load_policy()
    query = prometheus_query(f"http://127.0.0.1:{free_port()}", timeout_s=2)

    def unreachable() -> Any:
        result = analyse(policy, query, model="m", weight=10)
        assert "unreachable" in result.reasons[0], result
        return result

    kinds = _abort_past_the_deadline(unreachable, policy)
    assert "next" not in kinds and kinds[-1] == "abort", kinds


def _abort_past_the_deadline(analysis: Callable[[], Any], policy: Any) -> list[str]:
    """Analyse (each must be Inconclusive) and feed the step controller until it aborts; the actions it took."""
    from evals.canary.analysis import Phase, StepState, next_action

    state, now, kinds = StepState(weight=10, started=1000.0), 1000.0, []
    for _ in range(policy.analysis.max_failed_checks + 1):
        result = analysis()
        assert result.phase is Phase.INCONCLUSIVE, result
        now += policy.analysis.inconclusive_deadline_s + 1  # the deadline passes between analyses
        action = next_action(policy, state, result, now, hold_s=0)
        kinds.append(action.kind)
        state = action.state
        if action.kind == "abort":
            break
    return kinds


def metric_absent(gw: dict[str, Any], tmp: Path) -> None:
    from evals.canary.analysis import analyse, prometheus_query
    from evals.canary.policy import load_policy
    from evals.launcher.prometheus import prometheus_spec

    policy = load_policy()
    port = free_port()
    spec = prometheus_spec(port, state_dir=tmp / "prom", targets=tmp / "targets", name=f"prometheus-faults-{port}")
    with ManagedServer(spec, log_dir=tmp / "logs") as prom:
        result = analyse(policy, prometheus_query(prom.spec.base_url, timeout_s=5), model="m", weight=10)
    assert any("metric absent" in r for r in result.reasons), result
    assert result.requests == {"canary": 0.0, "stable": 0.0}, result
    kinds = _abort_past_the_deadline(lambda: result, policy)
    assert "next" not in kinds and kinds[-1] == "abort", kinds


def clock_skew(gw: dict[str, Any], tmp: Path) -> None:
    from evals.canary.analysis import AnalysisResult, Phase, StepState, next_action, window_for
    from evals.canary.policy import load_policy

    policy = load_policy(REPO_ROOT / "thresholds" / "embedded" / "canary-policy.yaml")
    a = policy.analysis
    hold = max(step.hold_s for step in policy.steps)
    need = int(-(-hold // a.interval_s))  # ceil(hold / interval)
    ok = AnalysisResult(Phase.SUCCESSFUL, (), {"canary": 50.0, "stable": 50.0}, a.window_s, ("every check holds",))
    started = 1_000_000.0
    # ahead: the analysing clock reads 10 minutes past the weight's, far beyond the hold
    state, kinds = StepState(weight=25, started=started), []
    for i in range(need):
        now = started + 600 + (i + 1) * a.interval_s
        assert a.interval_s <= window_for(policy, state, now) <= a.window_s
        action = next_action(policy, state, ok, now, hold_s=hold)
        kinds.append(action.kind)
        state = action.state
    assert kinds == ["wait"] * (need - 1) + ["next"], kinds
    # behind: the analysing clock reads 10 minutes before the weight was set
    state = StepState(weight=25, started=started)
    for i in range(need + 2):
        now = started - 600 + (i + 1) * a.interval_s
        assert window_for(policy, state, now) == a.interval_s
        action = next_action(policy, state, ok, now, hold_s=hold)
        assert action.kind == "wait", action
        state = action.state


def drift_corrupt(gw: dict[str, Any], tmp: Path) -> None:
    bad = tmp / "window.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file PAR1")
    out = tmp / "drift.json"
    proc = subprocess.run([sys.executable, "-m", "evals.drift", "--reference", str(bad), "--current", str(bad),
                           "--output", str(out), "--no-embeddings"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "--reference" in lines[0] and str(bad) in lines[0], proc.stderr
    assert not out.exists()


IMPL: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "gw-upstream-reset-mid-stream": reset_mid_stream, "gw-upstream-503": upstream_503, "gw-admin-bad-token": bad_token,
    "gw-s3-down-during-flush": s3_down, "canary-prometheus-unreachable": prometheus_unreachable,
    "canary-metric-absent": metric_absent, "canary-clock-skew": clock_skew, "drift-corrupt-parquet": drift_corrupt,
}


@pytest.mark.parametrize("case", cases("test_gateway_cases"), ids=lambda c: c.id)
def test_gateway_cases(case: Case, gw: dict[str, Any], tmp_path: Path) -> None:
    gw["mode"].value = "ok"
    try:
        IMPL[case.id](gw, tmp_path)
    finally:
        gw["mode"].value = "ok"
    no_secret_in([gw["token"]], paths=[gw["logs"]])
