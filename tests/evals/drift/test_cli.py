"""`python -m evals.drift` as the DAG calls it: verdicts, exit codes, bad input, persistence.

In-process (evals._cli.run_main), so Great Expectations is imported once per module; one
subprocess test checks the real entry point and the one-line error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from evals import catalogue
from evals._cli import run_main
from evals.drift import synthetic
from evals.drift.cli import main
from evals.gate_check import main as gate_check_main
from tests.conftest import REPO_ROOT

N = 2500
DRIFT = synthetic.Shift(prompt_length=1.1, refusal_points=0.05, new_language_share=0.05)


def drift(*args: str) -> int:
    return run_main(main, ["--no-embeddings", *args])


def results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("logs")
    pq.write_table(synthetic.window(N, seed=1), d / "ref.parquet")
    pq.write_table(synthetic.window(N, seed=2), d / "same.parquet")
    pq.write_table(synthetic.window(N, seed=3, shift=DRIFT), d / "drift.parquet")
    return d


def test_undrifted_window_passes_and_gate_check_agrees(logs: Path, tmp_path: Path) -> None:
    out = tmp_path / "drift.json"
    assert drift("--reference", str(logs / "ref.parquet"), "--current", str(logs / "same.parquet"),
                 "--output", str(out)) == 0
    r = results(out)
    assert r["verdict"]["status"] in ("no_drift", "warn") and r["verdict"]["drifted"] == []
    assert r["metrics"]["drift_checks_passed"] == 1 and r["metrics"]["current_rows"] == N
    assert r["meta"]["suite"] == "drift"
    assert run_main(gate_check_main, ["--results", str(out), "--threshold-file", "thresholds/drift.yaml"]) == 0


def test_drifted_window_fails_with_per_feature_detail(logs: Path, tmp_path: Path) -> None:
    out = tmp_path / "drift.json"
    assert drift("--reference", str(logs / "ref.parquet"), "--current", str(logs / "drift.parquet"),
                 "--output", str(out), "--report", str(tmp_path / "drift.md")) == 1
    r = results(out)
    v = r["verdict"]
    assert v["status"] == "drift"
    assert {"language_psi_drift", "refusal_rate_increase", "prompt_tokens_mean_ratio"} <= set(v["drifted"])
    assert catalogue.DRIFT.undeclared(r["metrics"]) == []  # every name written is one a gate may bound
    lang = next(f for f in v["features"] if f["metric"] == "language_psi_drift")
    assert lang["verdict"] == "drift" and lang["threshold"] == 0.2 and lang["statistic"] == "psi"
    assert lang["reference_size"] == N and lang["current_size"] == N and lang["qvalue"] < 0.01
    assert "pt" in lang["note"]
    status = next(f for f in v["features"] if f["metric"] == "status_psi_drift")
    assert status["verdict"] in ("ok", "warn")
    assert run_main(gate_check_main, ["--results", str(out), "--threshold-file", "thresholds/drift.yaml"]) == 1
    assert "language_psi" in (tmp_path / "drift.md").read_text()


def test_a_stored_reference_summary_gives_the_same_metrics(logs: Path, tmp_path: Path) -> None:
    a, b, ref = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "ref.npz"
    drift("--reference", str(logs / "ref.parquet"), "--current", str(logs / "drift.parquet"), "--output", str(a),
          "--save-reference", str(ref))
    assert ref.is_file()
    drift("--reference", str(ref), "--current", str(logs / "drift.parquet"), "--output", str(b))
    ma, mb = results(a)["metrics"], results(b)["metrics"]
    assert ma.keys() == mb.keys()
    for k in ma:
        assert ma[k] == pytest.approx(mb[k], abs=1e-12), k


def test_persistence_needs_consecutive_windows_and_counts_a_retry_once(logs: Path, tmp_path: Path) -> None:
    state, out = tmp_path / "state.json", tmp_path / "d.json"
    base = ["--reference", str(logs / "ref.parquet"), "--current", str(logs / "drift.parquet"), "--output", str(out),
            "--persistence", "2", "--state", str(state)]
    assert drift(*base, "--window-id", "w1") == 0  # first drifted window: held back
    r = results(out)
    assert "refusal_rate" in r["verdict"]["persistence"]["held_back"]
    assert r["metrics"]["refusal_rate_increase"] == 0 and r["metrics"]["refusal_rate_increase_window"] > 0.02
    assert catalogue.DRIFT.undeclared(r["metrics"]) == []  # the held-back X_window values too
    assert drift(*base, "--window-id", "w1") == 0  # the same window again (a retried task) does not count twice
    assert drift(*base, "--window-id", "w2") == 1
    assert results(out)["verdict"]["persistence"]["streaks"]["refusal_rate"] == 2
    assert run_main(gate_check_main, ["--results", str(out), "--threshold-file", "thresholds/drift.yaml"]) == 1


# -- bad input: failed checks (exit 1, status check_failed) ---------------------------------------


def _check_failed(logs: Path, tmp_path: Path, current: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "out.json"
    assert drift("--reference", str(logs / "ref.parquet"), "--current", str(current), "--output", str(out),
                 *extra) == 1
    r = results(out)
    assert r["verdict"]["status"] == "check_failed" and r["verdict"]["passed"] is False
    assert r["metrics"]["drift_checks_passed"] == 0
    assert "language_psi_drift" not in r["metrics"]  # no statistic on a broken window
    assert run_main(gate_check_main, ["--results", str(out), "--threshold-file", "thresholds/drift.yaml"]) == 1
    return r


def test_empty_window_is_a_failed_check(logs: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    pq.write_table(synthetic.window(10, seed=4).slice(0, 0), empty)
    r = _check_failed(logs, tmp_path, empty)
    assert any("min_rows" in f and "0 request rows" in f for f in r["verdict"]["check_failures"])


def test_window_below_the_minimum_rows_is_a_failed_check(logs: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.parquet"
    pq.write_table(synthetic.window(300, seed=5), small)
    r = _check_failed(logs, tmp_path, small)
    assert any("300 request rows (minimum 1000)" in f for f in r["verdict"]["check_failures"])


def test_schema_change_is_a_failed_check_naming_file_and_column(logs: Path, tmp_path: Path) -> None:
    changed = tmp_path / "changed.parquet"
    t = synthetic.window(N, seed=6).drop_columns(["duration_s"])
    t = t.set_column(t.schema.get_field_index("prompt_tokens"), "prompt_tokens",
                     pc.cast(t["prompt_tokens"], pa.string()))
    pq.write_table(t, changed)
    r = _check_failed(logs, tmp_path, changed)
    text = " ".join(r["verdict"]["check_failures"])
    assert "changed.parquet: column duration_s missing" in text and "prompt_tokens type string" in text


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_infinite_values_are_a_failed_check(logs: Path, tmp_path: Path, bad: float) -> None:
    t = synthetic.window(N, seed=7)
    dur = t["duration_s"].to_numpy().copy()
    dur[::50] = bad
    t = t.set_column(t.schema.get_field_index("duration_s"), "duration_s", pa.array(dur))
    path = tmp_path / "nan.parquet"
    pq.write_table(t, path)
    r = _check_failed(logs, tmp_path, path)
    assert any("finite" in f and "duration_s" in f for f in r["verdict"]["check_failures"])


def test_single_valued_duration_is_a_failed_check(logs: Path, tmp_path: Path) -> None:
    t = synthetic.window(N, seed=8)
    t = t.set_column(t.schema.get_field_index("duration_s"), "duration_s", pa.array(np.full(N, 0.5)))
    path = tmp_path / "one.parquet"
    pq.write_table(t, path)
    r = _check_failed(logs, tmp_path, path)
    assert any("great_expectations" in f and "duration_s" in f for f in r["verdict"]["check_failures"])


def test_out_of_range_values_fail_great_expectations(logs: Path, tmp_path: Path) -> None:
    t = synthetic.window(N, seed=9)
    pt = t["prompt_tokens"].to_numpy().copy()
    pt[:5] = -3
    t = t.set_column(t.schema.get_field_index("prompt_tokens"), "prompt_tokens", pa.array(pt))
    path = tmp_path / "neg.parquet"
    pq.write_table(t, path)
    r = _check_failed(logs, tmp_path, path)
    assert any("prompt_tokens" in f and "between" in f.lower() for f in r["verdict"]["check_failures"])


# -- bad input: one line, exit 2, nothing written -----------------------------------------------


def _bad(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> str:
    out = tmp_path / "never.json"
    assert drift(*args, "--output", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0]
    assert not out.exists()
    return err[-1]


def test_missing_folder_and_corrupt_parquet_are_bad_input(logs: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    msg = _bad(capsys, tmp_path, "--reference", str(logs / "ref.parquet"), "--current", str(tmp_path / "nope"))
    assert "--current" in msg and "nope" in msg
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1" + b"\x00garbage" * 20)
    msg = _bad(capsys, tmp_path, "--reference", str(logs / "ref.parquet"), "--current", str(corrupt))
    assert "corrupt.parquet" in msg and "not a readable Parquet file" in msg


def test_flag_errors_are_bad_input(logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, cur = str(logs / "ref.parquet"), str(logs / "same.parquet")
    assert "--state" in _bad(capsys, tmp_path, "--reference", ref, "--current", cur, "--persistence", "3")
    assert "http" in _bad(capsys, tmp_path, "--reference", ref, "--current", "http://x/y")
    assert "--thresholds" in _bad(capsys, tmp_path, "--reference", ref, "--current", cur,
                                  "--thresholds", str(tmp_path / "none.yaml"))
    assert "summary" in _bad(capsys, tmp_path, "--reference", str(tmp_path / "gone.npz"), "--current", cur)


def test_a_gate_on_a_metric_drift_never_writes_is_bad_input(logs: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    ref, cur = str(logs / "ref.parquet"), str(logs / "same.parquet")
    typo = tmp_path / "drift.yaml"
    typo.write_text((REPO_ROOT / "thresholds" / "drift.yaml").read_text().replace("topic_psi_drift", "topics_psi_drift"))
    msg = _bad(capsys, tmp_path, "--reference", ref, "--current", cur, "--thresholds", str(typo))
    assert f"{typo}: gates.topic_psi.metric: unknown metric 'topics_psi_drift' for the drift suite" in msg
    assert "did you mean 'topic_psi_drift'?" in msg
    warn = tmp_path / "warn.yaml"  # a warning gate is never failing, but a typo in one is still bad input
    warn.write_text((REPO_ROOT / "thresholds" / "drift.warn.yaml").read_text()
                    .replace("metric: arm_psi_drift", "metric: arms_psi_drift"))
    msg = _bad(capsys, tmp_path, "--reference", ref, "--current", cur, "--warn-thresholds", str(warn))
    assert f"{warn}: gates.arm_psi_warn.metric: unknown metric 'arms_psi_drift' for the drift suite" in msg


def test_entry_point_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "evals.drift", "--reference", str(tmp_path / "a"), "--current",
                        str(tmp_path / "b"), "--output", str(tmp_path / "o.json")], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines == [f"evals.drift: error: --reference {str(tmp_path / 'a')!r}: no such folder or Parquet file"]


def test_prompt_embedding_drift_through_the_cli(tmp_path: Path) -> None:
    ref, cur = tmp_path / "ref.parquet", tmp_path / "cur.parquet"
    pq.write_table(synthetic.window(300, seed=11, with_text=True), ref)
    pq.write_table(synthetic.window(300, seed=12, with_text=True, shift=synthetic.Shift(new_language_share=0.3)), cur)
    out = tmp_path / "d.json"
    assert run_main(main, ["--reference", str(ref), "--current", str(cur), "--output", str(out),
                           "--min-rows", "200"]) == 1
    r = results(out)
    assert "prompt_embedding_far_drift" in r["verdict"]["drifted"]
    far = next(f for f in r["verdict"]["features"] if f["metric"] == "prompt_embedding_far_drift")
    assert far["reference_size"] == 300 and far["current_size"] == 300 and far["threshold"] == 0.03
    assert r["metrics"]["prompt_embedding_far_share"] > 0.2
    assert r["metrics"]["current_rows"] == 300 and r["meta"]["min_rows"] == 200
