"""The Prometheus rules of infra/monitoring/: promtool accepts them and their unit tests pass.

``promtool check rules`` (syntax, PromQL, templates) and ``promtool test rules`` (the
unit tests in infra/monitoring/tests/) must both succeed, and every alert rule must
be covered by a test in which it fires (with its labels) and one in which it stays
silent: an alert without a test that can fail is an alert nobody knows works.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from evals import settings

MONITORING = settings.REPO_ROOT / "infra" / "monitoring"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yaml"))
TEST_FILES = sorted((MONITORING / "tests").glob("*.yaml"))


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = settings.current().promtool_bin
    assert binary.is_file(), f"{binary} missing: scripts/setup.sh installs Debian's prometheus package"
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd,
                          check=False)


def alert_rules() -> list[dict]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(r for r in group["rules"] if "alert" in r)
    return rules


def alert_cases() -> list[dict]:
    cases = []
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            cases.extend(test.get("alert_rule_test") or [])
    return cases


def test_rule_and_test_files_exist() -> None:
    assert RULE_FILES, "no rules in infra/monitoring/rules/"
    assert TEST_FILES, "no promtool tests in infra/monitoring/tests/"


def test_promtool_check_rules_accepts_every_rule_file() -> None:
    result = promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES), result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", *TEST_FILES, cwd=MONITORING / "tests")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_every_rule_file_is_loaded_by_some_test() -> None:
    loaded = set()
    for path in TEST_FILES:
        loaded.update((path.parent / f).resolve() for f in yaml.safe_load(path.read_text())["rule_files"])
    assert {p.resolve() for p in RULE_FILES} <= loaded


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: "-".join([r["alert"], *sorted(
    v for k, v in (r.get("labels") or {}).items() if k != "severity")]))
def test_every_alert_has_a_firing_and_a_silent_test(rule: dict) -> None:
    name, labels = rule["alert"], {k: str(v) for k, v in (rule.get("labels") or {}).items()}
    cases = [c for c in alert_cases() if c["alertname"] == name]
    fires = [a for c in cases for a in c.get("exp_alerts") or []
             if labels.items() <= {k: str(v) for k, v in a["exp_labels"].items()}.items()]
    silent = [c for c in cases if not c.get("exp_alerts")]
    assert fires, f"no promtool test expects {name} {labels} to fire"
    assert silent, f"no promtool test expects {name} to stay silent"
    assert rule.get("annotations", {}).get("summary") and rule["annotations"].get("runbook_url"), \
        f"{name}: summary and runbook_url annotations are required"
    assert labels.get("severity") in ("critical", "warning"), f"{name}: severity must be critical or warning"


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The harness can fail: promtool rejects a test that expects silence from a firing alert."""
    case = {
        "rule_files": [str(MONITORING / "rules" / "tollgate-alerts.yaml")],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": 'up{job="vllm", instance="127.0.0.1:1"}', "values": "0x10"}],
            "alert_rule_test": [{"eval_time": "5m", "alertname": "LLMServiceDown", "exp_alerts": []}],
        }],
    }
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(case))
    result = promtool("test", "rules", path)
    assert result.returncode != 0
    assert "LLMServiceDown" in result.stdout + result.stderr


def test_check_rules_rejects_a_bad_expression(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "X", "expr": "rate(up[5m]"}]}]}))
    result = promtool("check", "rules", bad)
    assert result.returncode != 0
