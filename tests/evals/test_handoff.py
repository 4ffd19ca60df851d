"""The run folder through S3 (kubernetes mode), against a real SeaweedFS.

What a pod does (``python -m evals.handoff ... -- STEP``) and what the Airflow tasks do
(``tollgate.resultstore.synced``) on the same prefix: the task writes prompts and the
baseline, the gate pod reads them and writes its verdict (also on a failed gate, exit
1 kept), the evidence task reads the verdict. Failures to reach S3 exit 3 (retry), never 0/1/2.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from evals.handoff import EXIT_HANDOFF_FAILED
from tests.fixtures.s3 import S3Endpoint, run_cli

# A gate-like step: reads results + baseline from the run folder, writes a verdict, exits 1 when worse.
GATE = (
    "import json, sys, pathlib; d = pathlib.Path(sys.argv[1]); r = json.loads((d / 'quality.json').read_text()); "
    "b = json.loads((d / 'baseline/quality.json').read_text()); ok = r['score'] >= b['score']; "
    "(d / 'quality.verdict.json').write_text(json.dumps({'passed': ok})); sys.exit(0 if ok else 1)"
)


def keys(s3: S3Endpoint, prefix: str) -> dict[str, bytes]:
    client = s3.client()
    out = {}
    for obj in client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", []):
        out[obj["Key"][len(prefix):]] = client.get_object(Bucket=s3.bucket, Key=obj["Key"])["Body"].read()
    return out


def test_tasks_and_pods_share_the_run_folder_through_s3(s3_server: S3Endpoint, tmp_path: Path, monkeypatch):
    folder = f"model_promotion/manual__{uuid.uuid4().hex[:8]}/orders-3"
    root = f"s3://{s3_server.bucket}/results"
    for key, value in {**s3_server.env(), "TOLLGATE_EXECUTION": "kubernetes", "TOLLGATE_RESULTS_URI": root,
                       "TOLLGATE_HOME": str(tmp_path / "worker")}.items():
        monkeypatch.setenv(key, value)
    from tollgate.resultstore import synced

    # 1. Airflow tasks (materialize_prompts / fetch_baseline) write locally, then push.
    with synced(folder, push=True) as local:
        (local / "baseline").mkdir(parents=True)
        (local / "baseline/quality.json").write_text(json.dumps({"score": 0.8}))
        (local / "quality.json").write_text(json.dumps({"score": 0.7}))
    assert set(keys(s3_server, f"results/{folder}/")) == {"baseline/quality.json", "quality.json"}

    # 2. The gate pod: pull into its emptyDir, judge (worse than baseline: exit 1), push the verdict.
    pod_dir = tmp_path / "pod" / "results" / folder
    proc = run_cli("evals.handoff", "--prefix", f"{root}/{folder}", "--dir", str(pod_dir), "--",
                   "python", "-c", GATE, str(pod_dir), env=s3_server.env())
    assert proc.returncode == 1, proc.stderr  # the step's own exit code, through the wrapper
    stored = keys(s3_server, f"results/{folder}/")
    assert json.loads(stored["quality.verdict.json"]) == {"passed": False}  # pushed although the gate failed
    assert json.loads(stored["quality.json"]) == {"score": 0.7}  # unchanged inputs are not re-uploaded
    assert "pushed 1 file(s)" in proc.stderr

    # 3. record_evidence on another worker: pull, then read the verdict as a plain file.
    monkeypatch.setenv("TOLLGATE_HOME", str(tmp_path / "other-worker"))
    with synced(folder, pull=True) as local:
        assert json.loads((local / "quality.verdict.json").read_text()) == {"passed": False}
        assert json.loads((local / "baseline/quality.json").read_text()) == {"score": 0.8}


def test_local_mode_never_touches_s3(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TOLLGATE_EXECUTION", "local")
    monkeypatch.setenv("TOLLGATE_HOME", str(tmp_path))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # would fail if used
    from tollgate.resultstore import remote_prefix, synced

    assert remote_prefix("dag/run/orders-1") is None
    with synced("dag/run/orders-1", pull=True, push=True) as local:
        (local / "x.json").parent.mkdir(parents=True, exist_ok=True)
        (local / "x.json").write_text("{}")
    assert (tmp_path / "volumes" / "tollgate-models" / "results" / "dag/run/orders-1" / "x.json").is_file()


def test_an_unreachable_store_is_infrastructure_not_a_verdict(tmp_path: Path):
    env = {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
           "AWS_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
    proc = run_cli("evals.handoff", "--prefix", "s3://b/results/x", "--dir", str(tmp_path / "d"), "--",
                   "python", "-c", "raise SystemExit(0)", env=env)
    assert proc.returncode == EXIT_HANDOFF_FAILED
    assert "cannot pull s3://b/results/x" in proc.stderr


def test_bad_flags_are_bad_input(tmp_path: Path):
    for args, needle in (
        (["--prefix", "http://x/y", "--dir", str(tmp_path), "--", "true"], "--prefix"),
        (["--prefix", "s3://bucket-only", "--dir", str(tmp_path), "--", "true"], "--prefix"),
        (["--prefix", "s3://b/p", "--dir", str(tmp_path)], "after `--`"),
        (["--prefix", "s3://b/p", "--dir", str(tmp_path), "--"], "no command"),
    ):
        proc = run_cli("evals.handoff", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not list(tmp_path.iterdir())  # no side effects
