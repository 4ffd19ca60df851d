"""The embedded production plane's pieces that need no server: admin token, banner, curl, the fail-closed check.

The plane itself (vLLM + gateway + Prometheus + traffic) runs in tests/infra/test_dashboard_live.py
and in ./tollgate demo, whose final output includes Plane.check().
"""

from __future__ import annotations

import json
import shlex
import stat
from pathlib import Path

import pytest

from evals import settings
from evals.canary.policy import load_policy
from evals.errors import CheckFailed
from evals.launcher import ManagedServer, free_port, prometheus_spec, vllm_spec
from evals.launcher.gateway import gateway_spec, write_config
from evals.launcher.production import Plane, admin_token, canary_traffic_rate


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TOLLGATE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TOLLGATE_GATEWAY_ADMIN_TOKEN", raising=False)
    return tmp_path / "home"


def plane(home: Path) -> Plane:
    vllm = ManagedServer(vllm_spec(settings.embedded_model_dir(), "m:1", free_port()))
    cfg = write_config(home / "gw.json", model="m", stable_url=vllm.spec.base_url, stable_version="1")
    gw = ManagedServer(gateway_spec(cfg, port=free_port(), admin_port=free_port()))
    prom = ManagedServer(prometheus_spec(free_port()))
    return Plane("m", "1", vllm, gw, prom, None, home / "production")


def test_admin_token_is_generated_once_private_and_env_wins(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = home / "production"
    first = admin_token(state)
    assert len(first) >= 24 and admin_token(state) == first
    assert stat.S_IMODE((state / "admin-token").stat().st_mode) == 0o600
    monkeypatch.setenv("TOLLGATE_GATEWAY_ADMIN_TOKEN", "from-env")
    assert admin_token(state) == "from-env"


def test_banner_has_the_urls_and_a_curl_that_parses(home: Path) -> None:
    p = plane(home)
    text = p.banner()
    assert p.gateway_url in text and p.prometheus_url in text and p.vllm.spec.base_url in text
    argv = shlex.split(p.curl())
    assert argv[0] == "curl" and argv[2] == p.gateway_url + "/v1/chat/completions"
    body = json.loads(argv[argv.index("-d") + 1])
    assert body["model"] == "m" and body["messages"][0]["role"] == "user"
    assert admin_token(p.state) not in text  # the file is named, the secret is not printed


def test_check_fails_closed_without_prometheus_or_logs(home: Path) -> None:
    p = plane(home)  # nothing started: Prometheus unreachable, no bucket
    with pytest.raises(CheckFailed, match=r'llm_requests_total\{model="m", version="1"\}.* = 0 in Prometheus'):
        p.check(timeout_s=1.0)


def test_canary_traffic_fills_the_embedded_policys_first_step() -> None:
    """The demo's canary traffic: at its 5 % step the embedded policy must see its minimum of canary
    requests per window (at the demo's 0.2 req/s trickle it saw ~0.9 per 90 s and failed closed)."""
    policy = load_policy(settings.REPO_ROOT / "thresholds" / "embedded" / "canary-policy.yaml")
    rate = canary_traffic_rate(policy, floor=0.2)
    first = policy.steps[0].weight / 100
    assert rate * first * policy.analysis.window_s >= 2 * policy.analysis.min_requests_per_arm
    assert 0.2 * first * policy.analysis.window_s < policy.analysis.min_requests_per_arm  # why the floor is not enough
    assert rate <= 1.5  # the rate the embedded plane is tested at (tests/dags/promotion_stack.py)
    assert canary_traffic_rate(policy, floor=5.0) == 5.0
