"""The production database, for real once: Airflow's metadata DB and MLflow's backend on PostgreSQL.

The embedded default runs on SQLite; production (docker-compose.yaml, infra/helm) on
PostgreSQL. This module starts Debian's PostgreSQL 15 (``initdb`` + ``postgres``, installed by
``scripts/setup.sh --with-browser``) on 127.0.0.1 on a free port in a temporary folder, through
the project's launcher (its own process group, a pid file for ``python -m evals.launcher
stop-all``; stopped by process group when the module ends, failed or not). Then:

- ``airflow db migrate`` builds Airflow's metadata DB on it and ``airflow dags reserialize``
  parses the Tollgate DAG files into it: every DAG of dags/ is in Postgres, serialized;
- an MLflow server (the launcher's spec, backend store switched to ``postgresql://``) takes a
  run, a registered model version and the ``champion`` alias through Tollgate's own registry
  code (tollgate.mlflow.registry), read back through the MLflow client and seen in Postgres.

As root (CI, this machine) the server runs as Debian's ``postgres`` user (initdb refuses root).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evals.launcher import ManagedServer, ServerSpec, free_port, mlflow_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")  # Debian's postgresql-15 (scripts/setup.sh apt_install)
DAG_IDS = {"drift_monitor", "model_evaluation", "model_promotion", "model_rollback", "nightly_eval", "retrain"}


@dataclasses.dataclass(frozen=True)
class Postgres:
    port: int
    user: str
    password: str

    def uri(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str):  # noqa: ANN201 - a psycopg2 connection
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                dbname=database, connect_timeout=5)


def _as_postgres_user(folder: Path) -> list[str]:
    """The command prefix that runs the server unprivileged (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root and Debian's `postgres` user is missing: run bash scripts/setup.sh --with-browser")
    for path in (folder, *folder.rglob("*")):
        os.chown(path, account.pw_uid, account.pw_gid)
    return ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups", "--"]


def _wait_accepting(pg: Postgres, server: ManagedServer, timeout_s: float = 60.0) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout_s
    while True:
        assert server.proc is not None and server.proc.poll() is None, \
            f"postgres exited; see {server.log_path}:\n{server.log_path.read_text()[-2000:]}"
        try:
            pg.connect("postgres").close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)  # polling interval, bounded by the deadline above


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    if not (PG_BIN / "postgres").is_file():
        pytest.fail(f"{PG_BIN}/postgres missing: run bash scripts/setup.sh --with-browser (Debian's postgresql)")
    # its own folder under /tmp: pytest's tmp root is 0700 root, which the postgres user cannot enter
    folder = Path(tempfile.mkdtemp(prefix="tollgate-postgres-"))
    pg = Postgres(port=free_port(), user="tollgate", password=secrets.token_urlsafe(18))
    (folder / "pwfile").write_text(pg.password + "\n")
    (folder / "socket").mkdir()
    prefix = _as_postgres_user(folder)
    data = folder / "data"
    init = subprocess.run([*prefix, str(PG_BIN / "initdb"), "-D", str(data), "-U", pg.user, "-A", "scram-sha-256",
                           f"--pwfile={folder / 'pwfile'}", "-E", "UTF8", "--locale=C", "--no-sync"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert init.returncode == 0, init.stdout + init.stderr
    (folder / "pwfile").unlink()
    spec = ServerSpec(
        name="postgres", port=pg.port, health_path="",
        argv=[*prefix, str(PG_BIN / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(pg.port),
              "-k", str(folder / "socket"),
              # a throwaway cluster: durability off, so the migrations run at the speed of the CPU
              "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
    server = ManagedServer(spec, log_dir=folder / "logs")
    server.start()
    try:
        _wait_accepting(pg, server)
        conn = pg.connect("postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE airflow")
            cur.execute("CREATE DATABASE mlflow")
        conn.close()
        yield pg
    finally:
        # fast shutdown (ends the sessions), then the launcher stops whatever is left of the group
        with contextlib.suppress(Exception):
            subprocess.run([*prefix, str(PG_BIN / "pg_ctl"), "-D", str(data), "stop", "-m", "fast", "-w", "-t", "30"],
                           capture_output=True, timeout=60, check=False)
        server.stop(timeout_s=15)
        shutil.rmtree(folder, ignore_errors=True)


def _airflow_env(pg: Postgres, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}  # no UNIT_TEST_MODE, no SQLite
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.uri("airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    return env


def _airflow(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "airflow", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"airflow {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_airflow_metadata_db_on_postgres_holds_the_serialized_tollgate_dags(postgres: Postgres, tmp_path: Path):
    env = _airflow_env(postgres, tmp_path / "airflow")
    _airflow(env, "db", "migrate")
    _airflow(env, "db", "check")
    _airflow(env, "dags", "reserialize")
    with contextlib.closing(postgres.connect("airflow")) as conn, conn.cursor() as cur:
        cur.execute("SELECT version_num FROM alembic_version")
        assert re.fullmatch(r"[0-9a-f]{12}", cur.fetchone()[0])
        cur.execute("SELECT dag_id, fileloc, is_stale FROM dag")
        dags = {row[0]: row for row in cur.fetchall()}
        cur.execute("SELECT dag_id, data IS NOT NULL OR data_compressed IS NOT NULL FROM serialized_dag")
        serialized = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM import_error")
        import_errors = cur.fetchone()[0]
    assert import_errors == 0
    assert set(dags) >= DAG_IDS, sorted(dags)
    assert all(not dags[d][2] and dags[d][1].startswith(str(REPO_ROOT / "dags")) for d in DAG_IDS)
    assert {d for d, present in serialized.items() if present} >= DAG_IDS, sorted(serialized)
    assert {p.stem for p in (REPO_ROOT / "dags").glob("*.py")} == DAG_IDS  # a new DAG file joins this test


def test_mlflow_on_postgres_takes_a_run_a_model_version_and_an_alias(postgres: Postgres, tmp_path: Path):
    from mlflow import MlflowClient

    from tollgate.mlflow import registry

    base = mlflow_spec(free_port(), state_dir=tmp_path / "mlflow")
    argv = list(base.argv)
    argv[argv.index("--backend-store-uri") + 1] = postgres.uri("mlflow")
    spec = dataclasses.replace(base, argv=argv, name="mlflow-postgres", ready_timeout_s=180.0)
    model = "pg-check"
    with ManagedServer(spec, log_dir=tmp_path / "logs") as server:
        uri = server.spec.base_url
        client = MlflowClient(tracking_uri=uri)
        experiment = client.create_experiment("tollgate-postgres-check")
        run = client.create_run(experiment, tags={"tollgate.suite": "quality"})
        client.log_param(run.info.run_id, "suite", "quality")
        client.log_metric(run.info.run_id, "task_success", 0.93)
        client.set_terminated(run.info.run_id)
        mv = registry.register_model_version(model, f"s3://tollgate/models/{model}/1", "a" * 64,
                                             run_id=run.info.run_id, tracking_uri=uri)
        move = registry.move_alias(model, registry.CHAMPION, mv.version, actor="tests", reason="postgres backend",
                                   evidence_run_id=run.info.run_id, tracking_uri=uri)
        assert move.changed and move.to_version == mv.version == "1"
        # read back through the client
        got = client.get_run(run.info.run_id)
        assert got.data.metrics["task_success"] == pytest.approx(0.93) and got.data.params == {"suite": "quality"}
        champion = client.get_model_version_by_alias(model, registry.CHAMPION)
        assert champion.version == "1" and champion.source == f"s3://tollgate/models/{model}/1"
        assert champion.run_id == run.info.run_id
        assert registry.get_alias(model, registry.CHAMPION, tracking_uri=uri) == "1"
        assert [r.to_version for r in registry.alias_history(model, registry.CHAMPION, tracking_uri=uri)] == ["1"]
    # and it is Postgres that holds them
    with contextlib.closing(postgres.connect("mlflow")) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, version FROM registered_model_aliases WHERE alias = %s", (registry.CHAMPION,))
        assert cur.fetchall() == [(model, 1)]
        cur.execute("SELECT key, value FROM metrics WHERE run_uuid = %s", (run.info.run_id,))
        assert ("task_success", pytest.approx(0.93)) in cur.fetchall()
