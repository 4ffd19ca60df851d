"""The settings objects: every TOLLGATE_* variable read once, validated, and documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from evals import settings
from evals.errors import BadInput
from tollgate import settings as airflow_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
# Set by the project for its own children, never by a user: documented next to the table.
EXPORTED_ONLY = {"TOLLGATE_RESULTS"}
MARKERS = ("<!-- settings-table:start -->", "<!-- settings-table:end -->")


def _code_variables() -> set[str]:
    found: set[str] = set()
    for folder in ("evals", "plugins", "dags", "scripts"):
        for file in (REPO_ROOT / folder).rglob("*"):
            if file.suffix in (".py", ".sh") and "__pycache__" not in file.parts:
                found |= set(re.findall(r"\bTOLLGATE_[A-Z0-9_]*[A-Z0-9]\b", file.read_text()))
    found |= set(re.findall(r"\bTOLLGATE_[A-Z0-9_]*[A-Z0-9]\b", (REPO_ROOT / "tollgate").read_text()))
    # prefixes in prose ("TOLLGATE_STAGE_*") are not variables
    return {v for v in found if not v.endswith("_")}


def test_every_variable_in_the_code_is_a_settings_field() -> None:
    declared = {v.name for v in settings.variables(settings.Settings)}
    declared |= {v.name for v in settings.variables(airflow_settings.AirflowSettings)}
    missing = sorted(_code_variables() - declared - EXPORTED_ONLY)
    assert not missing, f"read somewhere but not declared in evals/settings.py or tollgate/settings.py: {missing}"


def test_the_readme_table_is_generated_from_the_settings() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    start, end = (readme.index(m) for m in MARKERS)
    table = readme[start + len(MARKERS[0]):end].strip() + "\n"
    generated = settings.markdown_table(settings.Settings, airflow_settings.AirflowSettings)
    assert table == generated, "README configuration table is stale: run `.venv/bin/python -m evals.settings`"


def test_defaults_parse_and_derived_paths_follow_home(tmp_path: Path) -> None:
    s = settings.load(settings.Settings, {"TOLLGATE_HOME": str(tmp_path)})
    assert s.home == tmp_path.resolve() and s.log_dir == tmp_path.resolve() / "logs"
    assert s.model_dir == tmp_path.resolve() / "models" / "smollm2-135m-instruct"
    assert (s.vllm_port, s.mlflow_port, s.stage_splice, s.log_level) == (8010, 5010, True, "INFO")
    a = settings.load(airflow_settings.AirflowSettings, {"TOLLGATE_APPROVERS": " alice, bob ,,"})
    assert a.approvers == ("alice", "bob") and a.canary_thresholds == "thresholds/canary.yaml"


@pytest.mark.parametrize(("var", "value", "says"), [
    ("TOLLGATE_VLLM_PORT", "eighty", "is not a port number"),
    ("TOLLGATE_MLFLOW_PORT", "70000", "is not a port number"),
    ("TOLLGATE_STAGE_PART_MB", "0", "must be >= 1"),
    ("TOLLGATE_MAX_ERROR_SHARE", "1.5", "must be <= 1"),
    ("TOLLGATE_GPU_HOUR_PRICE", "nan", "must be a finite number"),
    ("TOLLGATE_STAGE_SPLICE", "maybe", "must be one of"),
    ("TOLLGATE_LOG_LEVEL", "loud", "must be one of"),
])
def test_a_bad_value_names_the_variable(var: str, value: str, says: str) -> None:
    with pytest.raises(BadInput) as exc:
        settings.load(settings.Settings, {var: value})
    assert str(exc.value).startswith(f"{var}=") and says in str(exc.value)


@pytest.mark.parametrize(("var", "value"), [
    ("TOLLGATE_EXECUTION", "docker"), ("TOLLGATE_BENCH_USERS", "-1"), ("TOLLGATE_NOTIFIER", "pager"),
    ("TOLLGATE_K8S_IN_CLUSTER", "perhaps"), ("TOLLGATE_APPROVAL_TIMEOUT_HOURS", "0"),
])
def test_a_bad_airflow_side_value_names_the_variable(var: str, value: str) -> None:
    with pytest.raises(BadInput, match=f"^{var}="):
        settings.load(airflow_settings.AirflowSettings, {var: value})


def test_secrets_never_show_in_a_printed_settings_object() -> None:
    s = settings.load(settings.Settings, {"TOLLGATE_API_KEY": "sk-live-123", "TOLLGATE_JUDGE_API_KEY": "sk-j-456",
                                          "TOLLGATE_AIRFLOW_PASSWORD": "hunter2"})
    assert s.api_key == "sk-live-123"
    assert not {"sk-live-123", "sk-j-456", "hunter2"} & set(re.findall(r"[\w-]+", repr(s)))


def test_the_check_command_exits_2_naming_the_variable() -> None:
    proc = subprocess.run([sys.executable, "-m", "evals.settings", "--check"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "TOLLGATE_BENCH_DURATION": "soon"}, cwd="/", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["evals.settings: error: TOLLGATE_BENCH_DURATION='soon' is not a number"]


def test_current_rereads_only_when_the_environment_changes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOLLGATE_HOME", str(tmp_path))
    first = settings.current()
    assert settings.current() is first
    monkeypatch.setenv("TOLLGATE_HOME", str(tmp_path / "other"))
    assert settings.current().home == (tmp_path / "other").resolve()
