"""evals.stage under bad input and faults: every case exits with the contract's code and publishes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from evals.weights.manifest import MANIFEST_NAME
from evals.weights.publish import publish_model
from evals.weights.stage import PARTS_DIR, PROGRESS
from tests.fixtures.s3 import REPO_ROOT, FaultRule, make_model, run_cli

MiB = 2**20
# Small parts and short timeouts so faults show up in seconds; botocore gets 2 attempts per request.
FAST = {"TOLLGATE_STAGE_PART_MB": "4", "TOLLGATE_STAGE_CONCURRENCY": "4", "TOLLGATE_STAGE_BACKOFF_S": "0.05",
        "TOLLGATE_S3_READ_TIMEOUT": "1", "TOLLGATE_STAGE_PART_ATTEMPTS": "3", "AWS_MAX_ATTEMPTS": "2"}


def _published(s3_server, src: Path) -> tuple[str, str, dict[str, bytes]]:
    version = uuid.uuid4().hex[:8]
    files = make_model(src)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3_server.env().items():
            mp.setenv(k, v)
        publish_model(src, f"s3://{s3_server.bucket}/models/faulty/{version}")
    return version, f"models/faulty/{version}", files


def _model(s3_server, published, dest: Path) -> dict:
    version, prefix, files = published
    return {"url": f"s3://{s3_server.bucket}/{prefix}", "prefix": prefix, "version": version, "files": files,
            "dest": dest, "final": dest / "faulty" / version, "partial": dest / "faulty" / f".{version}.partial"}


@pytest.fixture(scope="module")
def shared_published(s3_server, tmp_path_factory):
    return _published(s3_server, tmp_path_factory.mktemp("faults-src"))


@pytest.fixture
def model(s3_server, shared_published, tmp_path):
    """One published version shared by the tests that only read it; each gets its own volume."""
    return _model(s3_server, shared_published, tmp_path / "vol")


@pytest.fixture
def own_model(s3_server, tmp_path):
    """A version of its own, for tests that damage the manifest or the objects."""
    return _model(s3_server, _published(s3_server, tmp_path / "src"), tmp_path / "vol")


def _stage(s3_server, model, endpoint=None, extra=None, *args):
    env = {**s3_server.env(endpoint), **FAST, **(extra or {})}
    return run_cli("evals.stage", "--source", model["url"], "--dest", str(model["dest"]), *args, env=env)


def _rewrite_manifest(s3_server, model, edit):
    client = s3_server.client()
    key = f"{model['prefix']}/{MANIFEST_NAME}"
    doc = json.loads(client.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read())
    edit(doc)
    client.put_object(Bucket=s3_server.bucket, Key=key, Body=json.dumps(doc).encode())


def _entry(doc, path):
    return next(f for f in doc["files"] if f["path"] == path)


def _verified(progress: Path) -> set[str]:
    """The files the stager's progress file says it verified (empty while it is absent or mid-write)."""
    try:
        return set(json.loads(progress.read_text()).get("verified", {}))
    except (OSError, ValueError):
        return set()


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, stderr
    return lines[0]


# -- bad input: exit 2 ------------------------------------------------------------------------


def test_missing_manifest_exits_2_naming_the_key(s3_server, model):
    model["url"] = model["url"] + "-never-published"
    proc = _stage(s3_server, model)
    assert proc.returncode == 2
    assert f"{model['prefix']}-never-published/MANIFEST.json" in _one_line(proc.stderr)
    assert not model["dest"].exists() or not any(model["dest"].rglob("*.safetensors"))


def test_missing_object_exits_2_naming_the_key(s3_server, own_model):
    s3_server.client().delete_object(Bucket=s3_server.bucket, Key=f"{own_model['prefix']}/tokenizer.json")
    proc = _stage(s3_server, own_model)
    assert proc.returncode == 2
    assert f"{own_model['prefix']}/tokenizer.json" in _one_line(proc.stderr)
    assert not own_model["final"].exists()


def test_wrong_credentials_exit_2_and_print_no_secret(s3_server, model):
    secret = "not-the-secret-" + uuid.uuid4().hex
    proc = _stage(s3_server, model, extra={"AWS_SECRET_ACCESS_KEY": secret})
    assert proc.returncode == 2
    assert "credentials" in _one_line(proc.stderr)
    for s in (secret, s3_server.credentials.secret_access_key):
        assert s not in proc.stderr + proc.stdout
    unknown = _stage(s3_server, model, extra={"AWS_ACCESS_KEY_ID": "AKIDUNKNOWN0000"})
    assert unknown.returncode == 2 and "credentials" in unknown.stderr


@pytest.mark.parametrize("evil", ["/etc/tollgate-pwned", "../../escaped.txt", "sub/../../escaped.txt", "C:\\x"])
def test_manifest_path_escaping_dest_is_refused(s3_server, own_model, evil):
    _rewrite_manifest(s3_server, own_model, lambda d: _entry(d, "config.json").update(path=evil))
    proc = _stage(s3_server, own_model)
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert "files[" in line and "path" in line
    written = [p for p in own_model["dest"].parent.rglob("*") if "escaped" in p.name or "pwned" in p.name]
    assert written == [] and not Path("/etc/tollgate-pwned").exists()
    assert not own_model["final"].exists()


def test_bad_flags_exit_2():
    assert run_cli("evals.stage", "--source", "s3://b/x", "--dest", "/tmp/x").returncode == 2
    proc = run_cli("evals.stage", "--source", "s3://b/models/n/1", "--dest", "/tmp/x", "--keep", "0")
    assert proc.returncode == 2 and "--keep" in proc.stderr


# -- verification failures: exit 1, nothing published -------------------------------------------


def test_checksum_mismatch_exits_1_and_keeps_the_rest_resumable(s3_server, own_model):
    _rewrite_manifest(s3_server, own_model, lambda d: _entry(d, "model.safetensors").update(sha256="0" * 64))
    proc = _stage(s3_server, own_model)
    assert proc.returncode == 1
    line = _one_line(proc.stderr)
    assert "model.safetensors" in line and "sha256 mismatch" in line
    assert not own_model["final"].exists()
    # the bad file is deleted; the verified ones stay for the next run
    assert not (own_model["partial"] / "model.safetensors").exists()
    progress = json.loads((own_model["partial"] / PROGRESS).read_text())
    assert "config.json" in progress["verified"] and "model.safetensors" not in progress["verified"]


def test_size_mismatch_exits_1_naming_the_file(s3_server, own_model):
    _rewrite_manifest(s3_server, own_model, lambda d: _entry(d, "tokenizer.json").update(size=50_001))
    proc = _stage(s3_server, own_model)
    assert proc.returncode == 1
    line = _one_line(proc.stderr)
    assert "tokenizer.json" in line and "size mismatch" in line
    assert not own_model["final"].exists()


# -- S3 faults: retried within a bound --------------------------------------------------------


def test_503s_are_retried_then_staged(s3_server, model, fault_proxy):
    fault_proxy.add(FaultRule(key="model.safetensors", action="503", times=1))
    fault_proxy.add(FaultRule(key="config.json", action="503", times=1))
    proc = _stage(s3_server, model, fault_proxy.endpoint)
    assert proc.returncode == 0, proc.stderr
    assert all(r.hits == 1 for r in fault_proxy.rules)
    assert (model["final"] / "model.safetensors").read_bytes() == model["files"]["model.safetensors"]


@pytest.mark.parametrize("splice", ["1", "0"], ids=["splice", "readinto"])
def test_cut_mid_body_resumes_at_the_byte_reached(s3_server, model, fault_proxy, splice):
    rule = fault_proxy.add(FaultRule(key="model.safetensors", action="cut", after_bytes=MiB + 12345,
                                     range_from=4 * MiB, range_to=8 * MiB))
    fault_proxy.add(FaultRule(key="tokenizer.json", action="cut", after_bytes=20_000))  # a one-part file
    proc = _stage(s3_server, model, fault_proxy.endpoint, {"TOLLGATE_STAGE_SPLICE": splice})
    assert proc.returncode == 0, proc.stderr
    assert rule.hits == 1
    # the retry asked only for the rest of that part, not the whole part again
    ranges = fault_proxy.gets("model.safetensors")
    assert any(r.startswith(f"bytes={4 * MiB + MiB + 12345}-") for r in ranges), ranges
    assert fault_proxy.gets("tokenizer.json") == ["", "bytes=20000-49999"]
    for rel in ("model.safetensors", "tokenizer.json"):
        assert (model["final"] / rel).read_bytes() == model["files"][rel]


def test_connection_reset_is_retried(s3_server, model, fault_proxy):
    fault_proxy.add(FaultRule(key="model.safetensors", action="reset", after_bytes=300_000, times=2,
                              range_from=0, range_to=4 * MiB))
    fault_proxy.add(FaultRule(key="tokenizer.json", action="reset", after_bytes=10_000))
    proc = _stage(s3_server, model, fault_proxy.endpoint)
    assert proc.returncode == 0, proc.stderr
    assert [r.hits for r in fault_proxy.rules] == [2, 1]
    for rel in ("model.safetensors", "tokenizer.json"):
        assert (model["final"] / rel).read_bytes() == model["files"][rel]


def test_stall_is_cut_by_the_read_timeout_and_retried(s3_server, model, fault_proxy):
    fault_proxy.add(FaultRule(key="model.safetensors", action="stall", after_bytes=100_000, range_from=0,
                                range_to=4 * MiB))
    t0 = time.monotonic()
    proc = _stage(s3_server, model, fault_proxy.endpoint)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 30
    assert "retry 1/" in proc.stderr
    assert hashlib.sha256((model["final"] / "model.safetensors").read_bytes()).hexdigest() == hashlib.sha256(
        model["files"]["model.safetensors"]).hexdigest()


def test_persistent_faults_exit_1_within_the_bound_then_resume(s3_server, model, fault_proxy):
    # The last part of the big file always stalls; everything else arrives.
    rule = fault_proxy.add(FaultRule(key="model.safetensors", action="stall", after_bytes=1000, times=-1,
                                     range_from=8 * MiB))
    t0 = time.monotonic()
    proc = _stage(s3_server, model, fault_proxy.endpoint)
    assert proc.returncode == 1
    assert time.monotonic() - t0 < 40
    line = _one_line(proc.stderr)
    assert "model.safetensors" in line and "3 attempts" in line
    assert rule.hits == 3
    assert not model["final"].exists()
    # resumable: the small files are verified, the first two parts journaled
    assert (model["partial"] / PROGRESS).is_file() and any((model["partial"] / PARTS_DIR).iterdir())

    # Next run, store healthy again: only the missing part (4 MiB) is fetched.
    rule.times = 0
    fault_proxy.log.clear()
    proc = _stage(s3_server, model, fault_proxy.endpoint)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["downloaded_bytes"] == len(model["files"]["model.safetensors"]) - 8 * MiB
    assert out["reused_files"] == len(model["files"]) - 1
    assert fault_proxy.gets("model.safetensors") == [f"bytes={8 * MiB}-{12 * MiB - 1}"]
    assert (model["final"] / "model.safetensors").read_bytes() == model["files"]["model.safetensors"]
    assert not model["partial"].exists()


def test_persistent_503_exits_1_with_nothing_published(s3_server, model, fault_proxy):
    fault_proxy.add(FaultRule(key="tokenizer.json", action="503", times=-1))
    proc = _stage(s3_server, model, fault_proxy.endpoint)
    assert proc.returncode == 1
    assert "tokenizer.json" in _one_line(proc.stderr)
    assert not model["final"].exists()


def test_interrupted_stager_resumes_with_what_it_verified(s3_server, model, fault_proxy):
    # Killed (SIGKILL, as a pod eviction) while the big file's last part hangs.
    fault_proxy.add(FaultRule(key="model.safetensors", action="stall", after_bytes=0, times=-1,
                              range_from=8 * MiB))
    env = {**os.environ, **s3_server.env(fault_proxy.endpoint), **FAST, "TOLLGATE_S3_READ_TIMEOUT": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "evals.stage", "--source", model["url"],
                             "--dest", str(model["dest"])], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal_dir = model["partial"] / PARTS_DIR
    deadline = time.monotonic() + 60
    while not (journal_dir.is_dir() and any(len(p.read_text().split()) == 2 for p in journal_dir.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "stager never journaled two parts"
        time.sleep(0.05)  # poll for the journal, bounded by the deadline
    small = set(model["files"]) - {"model.safetensors"}
    deadline = time.monotonic() + 60
    while not small <= _verified(model["partial"] / PROGRESS):  # every small file verified, not just the first
        assert proc.poll() is None and time.monotonic() < deadline, "stager never verified the small files"
        time.sleep(0.05)  # poll the progress file, bounded by the deadline
    proc.kill()
    proc.wait(timeout=10)
    assert not model["final"].exists()
    fault_proxy.rules.clear()
    out = _stage(s3_server, model, fault_proxy.endpoint)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["downloaded_bytes"] <= len(model["files"]["model.safetensors"]) - 8 * MiB
    assert (model["final"] / "model.safetensors").read_bytes() == model["files"]["model.safetensors"]


# -- disk full -------------------------------------------------------------------------------


def test_not_enough_free_space_exits_1_before_downloading(s3_server, model, fault_proxy):
    proc = _stage(s3_server, model, fault_proxy.endpoint, {"TOLLGATE_STAGE_FREE_BYTES": str(5 * MiB)})
    assert proc.returncode == 1
    assert "not enough free space" in _one_line(proc.stderr)
    assert fault_proxy.gets("model.safetensors") == [] and fault_proxy.gets("config.json") == []
    assert not model["final"].exists()


def _tmpfs_runner() -> list[str]:
    """A private mount namespace where we may mount a small tmpfs: a real full disk."""
    for cmd in (["unshare", "-Urm"], ["unshare", "-m"]):
        if shutil.which(cmd[0]) and subprocess.run([*cmd, "true"], capture_output=True).returncode == 0:
            return cmd
    raise AssertionError("need unshare (user or mount namespaces) to mount a small tmpfs for the disk-full test")


def test_disk_full_during_download_exits_1_and_cleans_up(s3_server, model):
    dest = model["dest"]
    dest.mkdir(parents=True)
    # 8 MiB volume, 12 MiB model; the free-space probe is told there is room so the write itself fails.
    script = (
        f"mount -t tmpfs -o size=8m tmpfs {dest} && "
        f"{sys.executable} -m evals.stage --source {model['url']} --dest {dest}; rc=$?; "
        f"echo LISTING; find {dest} -mindepth 1; exit $rc"
    )
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **s3_server.env(), **FAST,
           "TOLLGATE_STAGE_FREE_BYTES": str(1 << 40)}
    proc = subprocess.run([*_tmpfs_runner(), "sh", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "disk full" in _one_line(proc.stderr)
    listing = proc.stdout.split("LISTING", 1)[1].split()
    # nothing published, and the partial folder is gone so the space is given back
    assert not any(p.endswith(f"/faulty/{model['version']}") for p in listing), listing
    assert not any(".partial" in p for p in listing), listing
