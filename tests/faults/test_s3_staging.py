"""The matrix's S3 / staging rows: `python -m evals.stage` against the real SeaweedFS (the
session's server), faults through the fault-injecting HTTP proxy in front of it.

Every row also asserts: nothing half-staged is visible on the volume, and neither S3
secret appears in the stager's output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from evals.launcher import free_port
from evals.weights.config import PARTS_DIR, PROGRESS
from evals.weights.manifest import MANIFEST_NAME
from evals.weights.publish import publish_model
from tests.faults.invariants import no_secret_in, nothing_half_staged, visible_versions
from tests.faults.matrix import Case, cases
from tests.fixtures.s3 import REPO_ROOT, FaultProxy, FaultRule, S3Endpoint, make_model, run_cli

pytestmark = pytest.mark.integration

MiB = 2**20
FAST = {"TOLLGATE_STAGE_PART_MB": "4", "TOLLGATE_STAGE_CONCURRENCY": "4", "TOLLGATE_STAGE_BACKOFF_S": "0.05",
        "TOLLGATE_S3_READ_TIMEOUT": "1", "TOLLGATE_STAGE_PART_ATTEMPTS": "3", "AWS_MAX_ATTEMPTS": "2"}


@dataclass
class Ctx:
    s3: S3Endpoint
    proxy: FaultProxy
    tmp: Path
    url: str = ""
    prefix: str = ""
    version: str = ""
    files: dict[str, bytes] | None = None
    outputs: list[str] | None = None

    @property
    def dest(self) -> Path:
        return self.tmp / "vol"

    @property
    def final(self) -> Path:
        return self.dest / "faulty" / self.version

    @property
    def partial(self) -> Path:
        return self.dest / "faulty" / f".{self.version}.partial"

    def publish(self) -> Ctx:
        self.version = uuid.uuid4().hex[:8]
        self.prefix = f"models/faulty/{self.version}"
        self.url = f"s3://{self.s3.bucket}/{self.prefix}"
        src = self.tmp / "src"
        src.mkdir(exist_ok=True)
        self.files = make_model(src)
        with pytest.MonkeyPatch.context() as mp:
            for k, v in self.s3.env().items():
                mp.setenv(k, v)
            publish_model(src, self.url)
        return self

    def stage(self, *, via_proxy: bool = True, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        env = {**self.s3.env(self.proxy.endpoint if via_proxy else None), **FAST, **(extra or {})}
        proc = run_cli("evals.stage", "--source", self.url, "--dest", str(self.dest), env=env)
        self.outputs = [*(self.outputs or []), proc.stdout, proc.stderr]
        return proc

    def manifest(self, edit: Callable[[dict[str, Any]], Any] | None = None, raw: bytes | None = None) -> None:
        client = self.s3.client()
        key = f"{self.prefix}/{MANIFEST_NAME}"
        if raw is None:
            doc = json.loads(client.get_object(Bucket=self.s3.bucket, Key=key)["Body"].read())
            assert edit is not None
            edit(doc)
            raw = json.dumps(doc).encode()
        client.put_object(Bucket=self.s3.bucket, Key=key, Body=raw)

    def staged_ok(self) -> None:
        assert self.files is not None
        for rel, data in self.files.items():
            assert (self.final / rel).read_bytes() == data, rel
        assert not self.partial.exists()


def error_line(proc: subprocess.CompletedProcess, code: int, *named: str) -> str:
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}:\n{proc.stderr[-3000:]}"
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, proc.stderr
    for n in named:
        assert n in lines[0], f"{n!r} not in {lines[0]}"
    return lines[0]


def _entry(doc: dict[str, Any], path: str) -> dict[str, Any]:
    return next(f for f in doc["files"] if f["path"] == path)


# -- the rows ----------------------------------------------------------------------------------


def burst(ctx: Ctx) -> None:
    for key in (MANIFEST_NAME, "model.safetensors", "config.json"):
        ctx.proxy.add(FaultRule(key=key, action="503", times=2))
    proc = ctx.stage()
    assert proc.returncode == 0, proc.stderr
    assert all(r.hits == 2 for r in ctx.proxy.rules)
    ctx.staged_ok()


def persistent_503(ctx: Ctx) -> None:
    ctx.proxy.add(FaultRule(key="tokenizer.json", action="503", times=-1))
    error_line(ctx.stage(), 1, "tokenizer.json")
    assert not ctx.final.exists()


def slow_body(ctx: Ctx) -> None:
    ctx.proxy.add(FaultRule(key="model.safetensors", action="stall", after_bytes=100_000, range_from=0,
                            range_to=4 * MiB))
    t0 = time.monotonic()
    proc = ctx.stage()
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 40 and "retry 1/" in proc.stderr
    ctx.staged_ok()


def truncated(ctx: Ctx) -> None:
    rule = ctx.proxy.add(FaultRule(key="model.safetensors", action="cut", after_bytes=MiB + 999,
                                   range_from=4 * MiB, range_to=8 * MiB))
    proc = ctx.stage()
    assert proc.returncode == 0, proc.stderr
    assert rule.hits == 1
    assert any(r.startswith(f"bytes={5 * MiB + 999}-") for r in ctx.proxy.gets("model.safetensors"))
    ctx.staged_ok()


def reset(ctx: Ctx) -> None:
    rule = ctx.proxy.add(FaultRule(key="model.safetensors", action="reset", after_bytes=200_000, range_from=0,
                                   range_to=4 * MiB))
    proc = ctx.stage()
    assert proc.returncode == 0, proc.stderr
    assert rule.hits == 1
    ctx.staged_ok()


def checksum(ctx: Ctx) -> None:
    ctx.manifest(lambda d: _entry(d, "model.safetensors").update(sha256="0" * 64))
    error_line(ctx.stage(), 1, "model.safetensors", "sha256 mismatch")
    assert not ctx.final.exists() and not (ctx.partial / "model.safetensors").exists()
    assert "config.json" in json.loads((ctx.partial / PROGRESS).read_text())["verified"]


def size(ctx: Ctx) -> None:
    ctx.manifest(lambda d: _entry(d, "tokenizer.json").update(size=50_001))
    error_line(ctx.stage(), 1, "tokenizer.json", "size mismatch")
    assert not ctx.final.exists()


def manifest_missing(ctx: Ctx) -> None:
    ctx.s3.client().delete_object(Bucket=ctx.s3.bucket, Key=f"{ctx.prefix}/{MANIFEST_NAME}")
    error_line(ctx.stage(), 2, f"{ctx.prefix}/{MANIFEST_NAME}")
    assert not any(ctx.dest.rglob("*.safetensors")) if ctx.dest.exists() else True


def manifest_malformed(ctx: Ctx) -> None:
    ctx.manifest(raw=b"{not json at all")
    error_line(ctx.stage(), 2, MANIFEST_NAME, "not valid JSON")
    assert not ctx.final.exists()


def manifest_shape(ctx: Ctx) -> None:
    ctx.manifest(lambda d: d.update(files={"config.json": 1}))
    error_line(ctx.stage(), 2, MANIFEST_NAME, "'files'")
    assert not ctx.final.exists()


def path_escape(ctx: Ctx) -> None:
    ctx.manifest(lambda d: _entry(d, "config.json").update(path="../../escaped.txt"))
    error_line(ctx.stage(), 2, "files[", "path")
    assert not ctx.final.exists()
    assert not [p for p in ctx.tmp.rglob("escaped*")]


def object_missing(ctx: Ctx) -> None:
    ctx.s3.client().delete_object(Bucket=ctx.s3.bucket, Key=f"{ctx.prefix}/tokenizer.json")
    error_line(ctx.stage(), 2, f"{ctx.prefix}/tokenizer.json")
    assert not ctx.final.exists()


def credentials(ctx: Ctx) -> None:
    wrong = "wrong-secret-" + uuid.uuid4().hex
    proc = ctx.stage(extra={"AWS_SECRET_ACCESS_KEY": wrong})
    error_line(proc, 2, "credentials")
    no_secret_in([wrong, ctx.s3.credentials.secret_access_key], texts=[proc.stdout, proc.stderr])
    assert not ctx.final.exists()


def unreachable(ctx: Ctx) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = {**ctx.s3.env(dead), **FAST}
    t0 = time.monotonic()
    proc = run_cli("evals.stage", "--source", ctx.url, "--dest", str(ctx.dest), env=env)
    assert proc.returncode in (1, 2), proc.stderr
    error_line(proc, proc.returncode, "127.0.0.1")
    assert time.monotonic() - t0 < 60
    assert not ctx.final.exists()


def disk_probe(ctx: Ctx) -> None:
    error_line(ctx.stage(extra={"TOLLGATE_STAGE_FREE_BYTES": str(5 * MiB)}), 1, "not enough free space")
    assert ctx.proxy.gets("model.safetensors") == []
    assert not ctx.final.exists()


def _tmpfs_runner() -> list[str]:
    for cmd in (["unshare", "-Urm"], ["unshare", "-m"]):
        if shutil.which(cmd[0]) and subprocess.run([*cmd, "true"], capture_output=True).returncode == 0:
            return cmd
    raise AssertionError("need unshare (user or mount namespaces) to mount a small tmpfs for a real full disk")


def disk_write(ctx: Ctx) -> None:
    ctx.dest.mkdir(parents=True)
    script = (f"mount -t tmpfs -o size=8m tmpfs {ctx.dest} && {sys.executable} -m evals.stage --source {ctx.url} "
              f"--dest {ctx.dest}; rc=$?; echo LISTING; find {ctx.dest} -mindepth 1; exit $rc")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **ctx.s3.env(), **FAST,
           "TOLLGATE_STAGE_FREE_BYTES": str(1 << 40)}
    proc = subprocess.run([*_tmpfs_runner(), "sh", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    error_line(proc, 1, "disk full")
    listing = proc.stdout.split("LISTING", 1)[1].split()
    assert not any(p.endswith(f"/faulty/{ctx.version}") for p in listing), listing
    assert not any(".partial" in p for p in listing), listing
    ctx.outputs = [proc.stdout, proc.stderr]


def two_stagers(ctx: Ctx) -> None:
    env = {**os.environ, **ctx.s3.env(), **FAST, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "evals.stage", "--source", ctx.url, "--dest", str(ctx.dest)],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    ctx.outputs = [t for pair in outs for t in pair]
    assert [p.returncode for p in procs] == [0, 0], outs
    ctx.staged_ok()
    assert len(visible_versions(ctx.dest)) == 1


def interrupted(ctx: Ctx) -> None:
    ctx.proxy.add(FaultRule(key="model.safetensors", action="stall", after_bytes=0, times=-1, range_from=8 * MiB))
    env = {**os.environ, **ctx.s3.env(ctx.proxy.endpoint), **FAST, "TOLLGATE_S3_READ_TIMEOUT": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "evals.stage", "--source", ctx.url, "--dest", str(ctx.dest)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    journal = ctx.partial / PARTS_DIR
    while not ((ctx.partial / PROGRESS).is_file() and journal.is_dir() and any(journal.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "the stager never journaled progress"
        time.sleep(0.05)  # poll for the journal, bounded by the deadline
    proc.kill()
    proc.wait(timeout=10)
    assert not ctx.final.exists()
    nothing_half_staged(ctx.dest)
    ctx.proxy.rules.clear()
    out = ctx.stage()
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["downloaded_bytes"] < sum(len(b) for b in (ctx.files or {}).values())
    ctx.staged_ok()


IMPL: dict[str, Callable[[Ctx], None]] = {
    "s3-503-burst": burst, "s3-503-persistent": persistent_503, "s3-slow-body": slow_body,
    "s3-truncated-body": truncated, "s3-reset": reset, "s3-checksum-mismatch": checksum, "s3-size-mismatch": size,
    "s3-manifest-missing": manifest_missing, "s3-manifest-malformed": manifest_malformed,
    "s3-manifest-wrong-shape": manifest_shape, "s3-manifest-path-escape": path_escape,
    "s3-object-missing": object_missing, "s3-wrong-credentials": credentials, "s3-unreachable": unreachable,
    "s3-disk-full-probe": disk_probe, "s3-disk-full-write": disk_write, "s3-two-stagers": two_stagers,
    "s3-interrupted-resumed": interrupted,
}


@pytest.mark.parametrize("case", cases("test_s3_staging"), ids=lambda c: c.id)
def test_s3_staging(case: Case, s3_server: S3Endpoint, fault_proxy: FaultProxy, tmp_path: Path) -> None:
    ctx = Ctx(s3_server, fault_proxy, tmp_path).publish()
    IMPL[case.id](ctx)
    nothing_half_staged(ctx.dest)
    no_secret_in([s3_server.credentials.secret_access_key], paths=[ctx.dest], texts=ctx.outputs or [])
