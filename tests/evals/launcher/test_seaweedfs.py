"""The SeaweedFS launcher: loopback only, every port checked, credentials enforced and never logged."""

from __future__ import annotations

import os
import socket
import stat

import boto3
import botocore.exceptions
import pytest

from evals.errors import PortInUse
from evals.launcher import ManagedServer
from evals.launcher.seaweedfs import S3Credentials, SeaweedPorts, embedded_credentials, seaweedfs_spec


def _listening_ports_of(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of the LISTEN sockets the process owns, from /proc (no psutil needed)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                cols = line.split()
                local, state, inode = cols[1], cols[3], cols[9]
                if state == "0A" and inode in inodes:  # 0A: LISTEN
                    hexip, hexport = local.split(":")
                    ip = socket.inet_ntoa(bytes.fromhex(hexip)[::-1]) if len(hexip) == 8 else hexip
                    out.add((ip, int(hexport, 16)))
    return out


def test_server_listens_on_loopback_only_on_the_configured_ports(s3_server):
    pid = s3_server.server.proc.pid
    listening = _listening_ports_of(pid)
    assert listening, "weed has no listening sockets"
    assert {ip for ip, _ in listening} == {"127.0.0.1"}
    argv = s3_server.server.spec.argv
    configured = {int(a.split("=", 1)[1]) for a in argv if a.startswith("-") and ".port" in a
                  and a.split("=", 1)[1] != "0"}
    assert {port for _, port in listening} <= configured
    for flag in ("-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                 "-master.telemetry=false", "-ip.bind=127.0.0.1"):
        assert flag in argv


def test_all_components_connect(s3_server):
    """The embedded worker reaches the admin server (it dials admin port + 10000)."""
    log = s3_server.server.log_path.read_text(errors="replace")
    session = log.rsplit(" start: ", 1)[-1]
    assert "INITIAL CONNECTION FAILED" not in session and "Reconnection attempt" not in session


def test_secret_is_neither_in_argv_nor_in_the_log(s3_server):
    secret = s3_server.credentials.secret_access_key
    assert secret not in " ".join(s3_server.server.spec.argv)
    assert secret not in s3_server.server.log_path.read_text(errors="replace")
    assert secret not in repr(s3_server.credentials)
    identities = next(a.split("=", 1)[1] for a in s3_server.server.spec.argv if a.startswith("-s3.config="))
    assert stat.S_IMODE(os.stat(identities).st_mode) == 0o600


def test_credentials_are_enforced(s3_server):
    bad = S3Credentials(s3_server.credentials.access_key_id, "wrong-secret")
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                          aws_access_key_id=bad.access_key_id, aws_secret_access_key=bad.secret_access_key)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.list_objects_v2(Bucket=s3_server.bucket)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert s3_server.client().list_objects_v2(Bucket=s3_server.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_a_taken_port_is_refused_naming_its_env_var(tmp_path):
    ports = SeaweedPorts.free()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports.filer_grpc))
        squatter.listen()
        spec = seaweedfs_spec(tmp_path / "d", ports=ports, credentials=S3Credentials("AK", "SK"), name="sw-port")
        with pytest.raises(PortInUse) as err:
            ManagedServer(spec).start()
    assert "TOLLGATE_SEAWEEDFS_FILER_GRPC_PORT" in str(err.value)
    assert ports.filer_grpc in {p for p, _ in spec.extra_ports}
    assert len(spec.extra_ports) + 1 == 10


def test_embedded_credentials_are_generated_once_private(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    first = embedded_credentials(tmp_path)
    assert embedded_credentials(tmp_path) == first
    assert stat.S_IMODE((tmp_path / "credentials.json").stat().st_mode) == 0o600
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "FROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fromenv-secret")
    assert embedded_credentials(tmp_path) == S3Credentials("FROMENV", "fromenv-secret")


def test_ports_from_env(monkeypatch):
    monkeypatch.setenv("TOLLGATE_SEAWEEDFS_S3_PORT", "18555")
    monkeypatch.setenv("TOLLGATE_SEAWEEDFS_ADMIN_PORT", "25000")
    ports = SeaweedPorts.from_env()
    assert (ports.s3, ports.admin, ports.admin_grpc) == (18555, 25000, 35000)
    # weed's worker dials admin + 10000 whatever the flag says: another value is refused
    monkeypatch.setenv("TOLLGATE_SEAWEEDFS_ADMIN_GRPC_PORT", "35001")
    with pytest.raises(Exception, match="ADMIN_GRPC_PORT"):
        SeaweedPorts.from_env()
    monkeypatch.delenv("TOLLGATE_SEAWEEDFS_ADMIN_GRPC_PORT")
    monkeypatch.setenv("TOLLGATE_SEAWEEDFS_ADMIN_PORT", "nope")
    with pytest.raises(Exception, match="TOLLGATE_SEAWEEDFS_ADMIN_PORT"):
        SeaweedPorts.from_env()
