"""`python -m evals.drift` reading request logs from a real SeaweedFS (tests/fixtures/s3.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals import requestlog
from evals._cli import run_main
from evals.drift import synthetic
from evals.drift.cli import main

DAY1 = "2026-11-30T12:00:00+00:00"
DAY2 = "2026-12-01T12:00:00+00:00"


@pytest.fixture
def s3_env(s3_server, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server


def _put(s3, prefix: str, table, when: str) -> None:  # type: ignore[no-untyped-def]
    key = f"{prefix}/{requestlog.relative_key('smollm2-orders', requestlog.as_utc(when))}"
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=requestlog.parquet_bytes(table))


def test_windows_from_s3_prefixes_with_time_bounds(s3_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime

    prefix = "drift-test"
    _put(s3_env, prefix, synthetic.window(1500, seed=1, start=datetime.fromisoformat(DAY1)), DAY1)
    shifted = synthetic.window(1500, seed=2, start=datetime.fromisoformat(DAY2),
                               shift=synthetic.Shift(new_language_share=0.08))
    _put(s3_env, prefix, shifted, DAY2)
    root = f"s3://{s3_env.bucket}/{prefix}/request-logs/smollm2-orders"
    out = tmp_path / "drift.json"
    rc = run_main(main, ["--no-embeddings", "--reference", root, "--reference-start", DAY1,
                         "--reference-end", "2026-11-30T13:00:00+00:00", "--current", root,
                         "--current-start", DAY2, "--current-end", "2026-12-01T13:00:00+00:00",
                         "--output", str(out)])
    r = json.loads(out.read_text())
    assert r["metrics"]["reference_rows"] == 1500 and r["metrics"]["current_rows"] == 1500
    assert r["meta"]["current_files"] == 1  # the other hour's partition is not read
    assert rc == 1 and "language_psi_drift" in r["verdict"]["drifted"]


def test_a_missing_s3_prefix_is_bad_input(s3_env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    missing = f"s3://{s3_env.bucket}/no-such-prefix/request-logs/m"
    rc = run_main(main, ["--no-embeddings", "--reference", missing, "--current", missing,
                         "--output", str(tmp_path / "o.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "no Parquet files under this S3 prefix" in err and "\n" not in err
    assert not (tmp_path / "o.json").exists()
