""".github/workflows/model-promotion.yaml: the shape our users rely on, and every command it runs exists.

actionlint is not installable offline here (the PyPI wheel downloads its binary at build
time), so this checks what actionlint would and what matters more: the jobs, the inputs, the
approval environment, and that every ``python -m MODULE --flag`` line is accepted by that
module's own parser (``--help`` lists the flag).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "model-promotion.yaml"


def load() -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def commands(doc: dict) -> list[str]:
    out = []
    for job in doc["jobs"].values():
        for step in job["steps"]:
            for line in step.get("run", "").replace("\n  ", " ").splitlines():
                if line.strip():
                    out.append(line.strip())
    return out


def test_inputs_jobs_and_the_approval_environment():
    doc = load()
    inputs = doc["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"model_name", "model_version", "target_env"}
    assert inputs["target_env"]["options"] == ["staging", "production"]
    jobs = doc["jobs"]
    assert list(jobs) == ["evaluate", "approve", "deploy"]
    assert jobs["approve"]["needs"] == "evaluate" and jobs["deploy"]["needs"] == "approve"
    assert jobs["approve"]["environment"] == "${{ inputs.target_env }}"
    uploads = [s for s in jobs["evaluate"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads and uploads[0]["with"]["path"] == "results/" and uploads[0]["if"] == "always()"


def test_the_exact_command_lines():
    lines = commands(load())
    text = "\n".join(lines)
    for suite in ("quality", "safety"):
        assert f'python -m evals.run --model "$NAME:$VERSION" --suite {suite} --output results/{suite}.json' in text
    assert ('python -m evals.benchmark --model "$NAME:$VERSION" --concurrent-users 50 --duration 300 '
            "--output results/latency.json") in text
    for suite in ("quality", "safety", "latency"):
        assert (f"python -m evals.gate_check --results results/{suite}.json "
                f"--threshold-file thresholds/{suite}.yaml") in text
        assert (REPO_ROOT / "thresholds" / f"{suite}.yaml").is_file()
    assert 'kubectl set image "deployment/$NAME-canary" "model=$NAME:$VERSION" -n "$NAMESPACE"' in text
    assert ('python -m canary.validate --deployment "$NAME-canary" --namespace "$NAMESPACE" --duration 900 '
            "--quality-threshold 0.85 --error-rate-threshold 0.02") in text
    assert 'kubectl rollout status "deployment/$NAME" -n "$NAMESPACE" --timeout=300s' in text
    assert load()["env"]["NAMESPACE"] == "ai-${{ inputs.target_env }}"


def test_every_python_module_accepts_the_flags_the_workflow_passes():
    checked = 0
    for line in commands(load()):
        if not line.startswith("python -m "):
            continue
        argv = shlex.split(line)
        module = argv[2]
        flags = {a.split("=")[0] for a in argv[3:] if a.startswith("--")}
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                              cwd=REPO_ROOT, timeout=120, check=False)
        assert proc.returncode == 0, f"{module}: {proc.stderr[-500:]}"
        known = set(re.findall(r"--[a-z][a-z0-9-]*", proc.stdout))
        assert flags <= known, f"{module} does not accept {sorted(flags - known)}"
        checked += 1
    assert checked == 7
