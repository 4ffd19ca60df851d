"""evals.publish against a real SeaweedFS: manifest last, immutability, resumable uploads."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

from evals.weights.manifest import MANIFEST_NAME, Manifest
from tests.fixtures.s3 import make_model, run_cli

PART_ENV = {"TOLLGATE_PUBLISH_PART_MB": "5"}  # the 12 MiB file goes up in 3 multipart parts


def _dest(s3_server, name="pubtest"):
    version = uuid.uuid4().hex[:8]
    return f"s3://{s3_server.bucket}/models/{name}/{version}", f"models/{name}/{version}"


def test_publish_uploads_files_then_manifest(s3_server, fault_proxy, tmp_path):
    files = make_model(tmp_path / "m")
    dest, prefix = _dest(s3_server)
    proc = run_cli("evals.publish", "--source", str(tmp_path / "m"), "--dest", dest,
                   env={**s3_server.env(fault_proxy.endpoint), **PART_ENV})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["files"] == len(files) and out["uploaded_files"] == len(files)
    assert out["bytes"] == sum(len(b) for b in files.values())

    client = s3_server.client()
    raw = client.get_object(Bucket=s3_server.bucket, Key=f"{prefix}/{MANIFEST_NAME}")["Body"].read()
    assert hashlib.sha256(raw).hexdigest() == out["manifest_sha256"]
    manifest = Manifest.from_bytes(raw, "test")
    assert json.loads(raw)["format_version"] == 1
    assert {f.path: (f.size, f.sha256) for f in manifest.files} == {
        rel: (len(b), hashlib.sha256(b).hexdigest()) for rel, b in files.items()}
    for rel, data in files.items():
        assert client.get_object(Bucket=s3_server.bucket, Key=f"{prefix}/{rel}")["Body"].read() == data
    # dot-folders are tool state: not published
    listed = client.list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix + "/")["Contents"]
    assert not any(".cache" in o["Key"] for o in listed)
    # the manifest is the last write: readers never see a manifest before its files
    writes = [p for m, p, _ in fault_proxy.log if m in ("PUT", "POST") and prefix in p]
    assert writes[-1].split("?")[0].endswith(f"/{MANIFEST_NAME}")
    # the big file went up in several parts
    assert sum(1 for m, p, _ in fault_proxy.log if m == "PUT" and "partNumber=" in p) >= 3


def test_republish_same_files_is_a_noop(s3_server, tmp_path):
    make_model(tmp_path / "m")
    dest, _ = _dest(s3_server)
    env = {**s3_server.env(), **PART_ENV}
    first = run_cli("evals.publish", "--source", str(tmp_path / "m"), "--dest", dest, env=env)
    assert first.returncode == 0, first.stderr
    again = run_cli("evals.publish", "--source", str(tmp_path / "m"), "--dest", dest, env=env)
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert out["already_published"] is True and out["uploaded_bytes"] == 0
    assert out["manifest_sha256"] == json.loads(first.stdout)["manifest_sha256"]


def test_different_files_are_refused_unless_force(s3_server, tmp_path):
    make_model(tmp_path / "a", seed=1)
    make_model(tmp_path / "b", seed=2, big_bytes=1000)
    dest, prefix = _dest(s3_server)
    env = {**s3_server.env(), **PART_ENV}
    assert run_cli("evals.publish", "--source", str(tmp_path / "a"), "--dest", dest, env=env).returncode == 0
    refused = run_cli("evals.publish", "--source", str(tmp_path / "b"), "--dest", dest, env=env)
    assert refused.returncode == 2
    assert "immutable" in refused.stderr and "--force" in refused.stderr
    client = s3_server.client()
    raw = client.get_object(Bucket=s3_server.bucket, Key=f"{prefix}/{MANIFEST_NAME}")["Body"].read()
    assert Manifest.from_bytes(raw, "t").total_size > 12 * 2**20  # still version a

    forced = run_cli("evals.publish", "--source", str(tmp_path / "b"), "--dest", dest, "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    raw = client.get_object(Bucket=s3_server.bucket, Key=f"{prefix}/{MANIFEST_NAME}")["Body"].read()
    assert Manifest.from_bytes(raw, "t").total_size < 200_000
    assert hashlib.sha256(raw).hexdigest() == json.loads(forced.stdout)["manifest_sha256"]


def test_interrupted_publish_resumes_without_reuploading(s3_server, tmp_path):
    files = make_model(tmp_path / "m")
    dest, prefix = _dest(s3_server)
    # An earlier run that died after uploading the big file (tagged with its sha256) and before the manifest.
    client = s3_server.client()
    big = files["model.safetensors"]
    client.put_object(Bucket=s3_server.bucket, Key=f"{prefix}/model.safetensors", Body=big,
                      Metadata={"tollgate-sha256": hashlib.sha256(big).hexdigest()})
    # ... and a stale, wrong copy of another file with no tag: that one must be replaced.
    client.put_object(Bucket=s3_server.bucket, Key=f"{prefix}/config.json", Body=b"garbage")
    proc = run_cli("evals.publish", "--source", str(tmp_path / "m"), "--dest", dest, env=s3_server.env())
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["uploaded_files"] == len(files) - 1
    assert out["uploaded_bytes"] == sum(len(b) for b in files.values()) - len(big)
    assert client.get_object(Bucket=s3_server.bucket, Key=f"{prefix}/config.json")["Body"].read() == files["config.json"]


@pytest.mark.parametrize("args, needle", [
    (["--source", "/nonexistent-folder-xyz", "--dest", "s3://b/models/n/1"], "--source"),
    (["--source", ".", "--dest", "http://not-s3/models/n/1"], "--dest"),
    (["--source", ".", "--dest", "s3://bucket/only-one-part"], "--dest"),
    (["--source", ".", "--dest", "s3://bucket/models/bad name/1"], "NAME"),
])
def test_bad_input_exits_2(args, needle):
    proc = run_cli("evals.publish", *args)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_wrong_credentials_exit_2_without_the_secret(s3_server, tmp_path):
    make_model(tmp_path / "m", big_bytes=1000)
    dest, _ = _dest(s3_server)
    secret = "wrong-" + uuid.uuid4().hex
    env = {**s3_server.env(), "AWS_SECRET_ACCESS_KEY": secret}
    proc = run_cli("evals.publish", "--source", str(tmp_path / "m"), "--dest", dest, env=env)
    assert proc.returncode == 2
    assert "credentials" in proc.stderr
    assert secret not in proc.stderr + proc.stdout
    assert s3_server.credentials.secret_access_key not in proc.stderr + proc.stdout


def test_concurrent_publishers_of_one_version_cannot_both_win(s3_server, tmp_path):
    import os
    import subprocess
    import sys

    from tests.fixtures.s3 import REPO_ROOT

    make_model(tmp_path / "a", seed=1, big_bytes=2 * 2**20)
    make_model(tmp_path / "b", seed=2, big_bytes=2 * 2**20)
    dest, prefix = _dest(s3_server)
    env = {**os.environ, **s3_server.env()}
    procs = [subprocess.Popen([sys.executable, "-m", "evals.publish", "--source", str(tmp_path / src), "--dest", dest],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for src in ("a", "b")]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    winners = [json.loads(out) for rc, out, _ in results if rc == 0]
    assert len(winners) <= 1, results
    for rc, _, err in results:
        # lost a race (1: its objects were overwritten, or the manifest write), or found the winner's manifest (2)
        assert rc == 0 or (rc == 1 and "another publish of this version" in err) or (
            rc == 2 and "immutable" in err), err
    client = s3_server.client()
    if winners:
        raw = client.get_object(Bucket=s3_server.bucket, Key=f"{prefix}/{MANIFEST_NAME}")["Body"].read()
        assert hashlib.sha256(raw).hexdigest() == winners[0]["manifest_sha256"]
    else:  # both saw the other's objects: neither made the version visible
        listed = client.list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix + "/").get("Contents", [])
        assert not any(o["Key"].endswith(MANIFEST_NAME) for o in listed)
