"""The matrix's bad-input rows: each is a real CLI run (a subprocess, as a pod runs it) that
must exit 2 with one line naming the file, field or flag, and leave nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.matrix import Case, cases
from tests.fixtures.airflow import REPO_ROOT

RESULTS = {"metrics": {"task_success_rate": 0.95, "groundedness_score": 0.9}, "samples": [],
           "meta": {"model": "m", "version": "1", "suite": "quality"}}


def cli(module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TOLLGATE_ENDPOINT", "OPENAI_"))}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=base, capture_output=True,
                          text=True, timeout=timeout, check=False)


def one_error_line(proc: subprocess.CompletedProcess, *must_name: str) -> str:
    """Exit 2 and exactly one error line on stderr that names everything in ``must_name``."""
    assert proc.returncode == 2, f"exit {proc.returncode}, expected 2:\n{proc.stderr[-2000:]}"
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for name in must_name:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"
    return lines[0]


def gate_check(tmp: Path, text: str, *, timeout: float = 60) -> tuple[subprocess.CompletedProcess, Path, Path]:
    thr = tmp / "gates.yaml"
    thr.write_text(text)
    res = tmp / "results.json"
    res.write_text(json.dumps(RESULTS))
    verdict, report = tmp / "verdict.json", tmp / "report.md"
    proc = cli("evals.gate_check", "--results", str(res), "--threshold-file", str(thr), "--output", str(verdict),
               "--report", str(report), timeout=timeout)
    return proc, thr, verdict


def bad_thresholds(text: str, *named: str) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        proc, thr, verdict = gate_check(tmp, text)
        one_error_line(proc, str(thr), *named)
        assert not verdict.exists() and not (tmp / "report.md").exists(), "bad input had a side effect"
    return run


def _bomb(tmp: Path) -> None:
    levels = ["a: &a [" + ",".join(['"lol"'] * 9) + "]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    text = "\n".join(levels) + "\n" + "gates:\n  g: {metric: m, min: 1, description: *i}\n"
    started = time.monotonic()
    proc, thr, verdict = gate_check(tmp, text, timeout=20)
    one_error_line(proc, str(thr), "alias")
    assert time.monotonic() - started < 10 and not verdict.exists()


def _unknown_metric(tmp: Path) -> None:
    # RESULTS say meta.suite quality: a name the quality suite never writes is a typo in the file
    bad_thresholds("gates:\n  ok: {metric: task_success_rate, min: 0.9}\n"
                   "  typo: {metric: task_sucess_rate, min: 0.9}\n",
                   "gates.typo.metric", "unknown metric 'task_sucess_rate' for the quality suite",
                   "did you mean 'task_success_rate'")(tmp)
    # the contrast: a name the suite writes that this run lacks is a failed run (exit 1), never bad input
    proc, _, verdict = gate_check(tmp, "gates:\n  ok: {metric: task_success_rate, min: 0.9}\n"
                                       "  judged: {metric: hallucination_rate, max: 0.1}\n")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(verdict.read_text())
    assert doc["passed"] is False and doc["failed_gates"] == ["judged"]
    assert "hallucination_rate missing from results: fails closed" in proc.stderr


def run_model(tmp: Path, ref: str, *named: str, bench: bool = True) -> None:
    out = tmp / "out.json"
    proc = cli("evals.run", "--model", ref, "--suite", "safety", "--endpoint", "http://127.0.0.1:9/v1",
               "--output", str(out))
    one_error_line(proc, "--model", *named)
    assert not out.exists()
    if not bench:
        return
    proc = cli("evals.benchmark", "--model", ref, "--endpoint", "http://127.0.0.1:9", "--output", str(out),
               "--duration", "1")
    one_error_line(proc, "--model")
    assert not out.exists()


def hostile_names(*refs: str) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        for i, ref in enumerate(refs):
            run_model(tmp, ref, bench=i == 0)  # both pod CLIs share the parser; one benchmark run suffices
    return run


def _stage_traversal(tmp: Path) -> None:
    dest = tmp / "vol"
    for src in ("s3://b/models/../../x/1", "s3://b/models/n/..", "s3://b/models/n/1;id", "/etc/passwd"):
        proc = cli("evals.stage", "--source", src, "--dest", str(dest))
        one_error_line(proc, "--source")
    assert not dest.exists() or not any(dest.rglob("*"))


def _dag_params(tmp: Path) -> None:
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamValidationError

    from evals.contract import MODEL_NAME_PATTERN, MODEL_VERSION_PATTERN
    from tollgate import promotion
    from tollgate.exceptions import TollgateError

    hostile = [("../../etc", "1"), ("x;rm -rf /", "1"), ("modèle", "1"), ("a" * 300, "1"), ("ok", "1/../2"),
               ("ok", "$(id)")]
    for name, version in hostile:
        with pytest.raises(TollgateError, match="params model_name/model_version"):
            promotion.validate_request(name, version, "staging")  # refused before any registry call
        with pytest.raises(ParamValidationError):
            Param(name, type="string", pattern=MODEL_NAME_PATTERN).resolve() if name != "ok" else \
                Param(version, type="string", pattern=MODEL_VERSION_PATTERN).resolve()
    with pytest.raises(TollgateError, match="target_env"):
        promotion.validate_request("ok", "1", "prod")
    with pytest.raises(ParamValidationError):
        Param("prod", type="string", enum=["staging", "production"]).resolve()


def _cli_flags(tmp: Path) -> None:
    out = tmp / "out.json"
    checks = [
        (("evals.gate_check", "--threshold-file", "thresholds/quality.yaml"), ("--results",)),
        (("evals.run", "--model", "m:1", "--suite", "quality", "--output", str(out), "--concurrency", "0",
          "--endpoint", "http://127.0.0.1:9/v1"), ("--concurrency",)),
        (("evals.run", "--model", "m:1", "--suite", "nope", "--output", str(out)), ("--suite",)),
        (("evals.benchmark", "--model", "m:1", "--output", str(out), "--duration", "-1"), ("--duration",)),
        (("evals.stage", "--source", "s3://b/models/n/1", "--dest", str(tmp / "v"), "--keep", "0"), ("--keep",)),
        (("evals.gate_check", "--results", str(out), "--threshold-file", "thresholds/quality.yaml", "--bogus"),
         ("--bogus",)),
    ]
    for args, named in checks:
        one_error_line(cli(*args), *named)
    assert not out.exists() and not (tmp / "v").exists()


def _env_values(tmp: Path) -> None:
    out = tmp / "out.json"
    proc = cli("evals.run", "--model", "m:1", "--suite", "safety", "--endpoint", "http://127.0.0.1:9/v1",
               "--output", str(out), env={"TOLLGATE_GPU_HOUR_PRICE": "cheap"})
    one_error_line(proc, "TOLLGATE_GPU_HOUR_PRICE")
    proc = cli("evals.stage", "--source", "s3://b/models/n/1", "--dest", str(tmp / "v"),
               env={"TOLLGATE_STAGE_PART_MB": "x"})
    one_error_line(proc, "TOLLGATE_STAGE_PART_MB")
    assert not out.exists() and not (tmp / "v").exists()
    # the Airflow side: a bad value is BadSetting (exit 2) naming the variable, at parse time
    code = ("import os; os.environ['TOLLGATE_EVAL_LIMIT']='-3'\n"
            "from tollgate import settings\n"
            "from tollgate.exceptions import BadSetting\n"
            "try:\n    settings.current()\nexcept BadSetting as e:\n    print('BAD', e.exit_code, e)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "plugins")})
    bad = [ln for ln in proc.stdout.splitlines() if ln.startswith("BAD ")]
    assert bad and bad[0].startswith("BAD 2 ") and "TOLLGATE_EVAL_LIMIT" in bad[0], proc.stdout + proc.stderr


IMPL: dict[str, Callable[[Path], None]] = {
    "thr-unknown-gate-key": bad_thresholds("gates:\n  g: {metric: m, min: 1, maxx: 2}\n", "gates.g.maxx"),
    "thr-unknown-file-key": bad_thresholds("gate:\n  g: {metric: m, min: 1}\n", "'gate'"),
    "thr-wrong-type": bad_thresholds("gates:\n  g: {metric: m, min: one}\n", "gates.g.min"),
    "thr-min-and-max": bad_thresholds("gates:\n  g: {metric: m, min: 0.9, max: 0.1}\n", "gates.g", "both"),
    "thr-comparison-mismatch": bad_thresholds("gates:\n  g: {metric: m, min: 1, comparison: lte}\n",
                                              "gates.g.comparison"),
    "thr-duplicate-gate": bad_thresholds("gates:\n  g: {metric: m, min: 1}\n  g: {metric: n, min: 2}\n",
                                         "duplicate key 'g'"),
    "thr-yaml-anchors": bad_thresholds("gates:\n  a: &g {metric: m, min: 1}\n  b: *g\n", "alias *g"),
    "thr-yaml-bomb": _bomb,
    "thr-empty-file": bad_thresholds("", "top level"),
    "thr-not-yaml": bad_thresholds("gates:\n  g: {metric: m, min: [1\n", "not valid YAML"),
    "thr-confidence-range": bad_thresholds("gates:\n  g: {metric: m, min: 1, confidence: 1.5}\n",
                                           "gates.g.confidence"),
    "thr-unknown-metric": _unknown_metric,
    "name-traversal": hostile_names("../../etc:1", "a/b:1"),
    "name-shell": hostile_names("x;rm -rf /:1", "$(id):1", "a`id`:1", "a|b:1"),
    "name-too-long": hostile_names("a" * 300 + ":1"),
    "name-unicode": hostile_names("modèle:1", "abc\u202edcb:1", "ｍodel:1"),
    "version-hostile": hostile_names("m:1/../2", "m:1;id", "m:01x", "m:" + "9" * 20, "m:"),
    "stage-source-traversal": _stage_traversal,
    "dag-params-hostile": _dag_params,
    "cli-flags": _cli_flags,
    "env-values": _env_values,
}


@pytest.mark.parametrize("case", cases("test_bad_input"), ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    IMPL[case.id](tmp_path)
