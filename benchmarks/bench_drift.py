"""Drift statistics: evals.drift vs Evidently's data-drift preset vs plain scipy, and drift quality.

    .venv/bin/python -m benchmarks.bench_drift [--rows 1000000] [--splits 100] [--prompts 10000] \
        [--parts speed,checks,embeddings,false_alarms,detect] [--json results/bench_drift.json]

Parts (all in one run by default; each prints a table):

speed         1,000,000 + 1,000,000 rows x 7 columns (6 numeric, 1 categorical), one data set
              written once and read by three worker processes (so each one's peak memory is its
              own): evals.drift (reference summary built once, then the window), plain scipy
              (ks_2samp, wasserstein_distance, jensenshannon, chi2_contingency, PSI in numpy) and
              Evidently 0.7.23's DataDriftPreset with its defaults (normed Wasserstein for numbers,
              Jensen-Shannon for categories at this size). Values are compared: evals.drift vs
              scipy on every statistic, vs Evidently on the statistics Evidently reports.
checks        the data checks (Arrow + Great Expectations) on a 1M-row request-log window, with
              GX on a 200k-row sample and on every row (the default up to 1M rows).
embeddings    prompt-embedding drift on N + N prompts (all-MiniLM-L6-v2 int8 ONNX, 2 threads):
              the reference summary (embed, k-means, bandwidth) and one window (embed, far share,
              MMD with 500 permutations on 1000 + 1000).
false_alarms  >= 100 random undrifted splits of one 20,000-request traffic sample: the share of
              splits evals.drift calls drift with thresholds/drift.yaml (BH + minimum effects),
              beside a naive rule (any raw p < 0.01) and Evidently's defaults on the same splits.
detect        windows of 1,000 requests against a 5,000-request reference, with an injected shift
              growing linearly to its full size at window 10 (prompt length +10 %, refusal share +5
              points, 5 % of traffic in a new language/topic): the first window that raises drift,
              evals.drift vs Evidently's defaults.

Evidently pins pandas < 3 and other packages this project pins differently, so it is not in
requirements.txt: the benchmark creates ``.tollgate/bench-evidently`` (uv, from PyPI:
evidently==0.7.23, pandas<3) on first use and runs Evidently's part there in a subprocess.
Goal (issue 13): evals.drift >= 20x faster than Evidently on the speed part (about 1.3 s or
less) with identical values; embedding drift < 60 s; false alarms <= 1 %.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EVIDENTLY_ENV = ROOT / ".tollgate" / "bench-evidently"
EVIDENTLY_PINS = ("evidently==0.7.23", "pandas<3")
NUMERIC = ("prompt_tokens", "output_tokens", "ttft_s", "duration_s", "feedback_score", "queue_s")
CATEGORICAL = "language"
LANGS = np.array(["en", "de", "fr", "es", "it"])
FRAME_NUMERIC = ("prompt_tokens", "output_tokens", "ttft_s", "duration_s", "feedback_score", "refusal",
                 "guardrail_hits", "fallback")
FRAME_CATEGORICAL = ("status", "arm", "language", "topic", "answer_class")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- the speed data set ---------------------------------------------------------------------------


def make_speed_data(rows: int, path: Path) -> None:
    rng = np.random.default_rng(13)

    def side(shift: float) -> dict[str, np.ndarray]:
        out = {
            "prompt_tokens": np.round(rng.lognormal(4.0, 0.5, rows) * (1 + 0.05 * shift)),
            "output_tokens": np.round(rng.lognormal(3.5, 0.6, rows)),
            "ttft_s": rng.gamma(4.0, 0.05, rows),
            "duration_s": rng.gamma(9.0, 0.1, rows) * (1 + 0.1 * shift),
            "feedback_score": np.clip(rng.normal(0.8 - 0.02 * shift, 0.15, rows), 0, 1),
            "queue_s": rng.exponential(0.02, rows),
        }
        p = np.array([0.6, 0.15, 0.1, 0.1, 0.05]) if not shift else np.array([0.55, 0.15, 0.1, 0.1, 0.1])
        out["language"] = LANGS[rng.choice(5, rows, p=p)]
        return out

    ref, cur = side(0.0), side(1.0)
    np.savez(path, **{f"ref_{k}": v for k, v in ref.items()}, **{f"cur_{k}": v for k, v in cur.items()})


def _load(path: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(path) as d:
        ref = {k[4:]: d[k] for k in d.files if k.startswith("ref_")}
        cur = {k[4:]: d[k] for k in d.files if k.startswith("cur_")}
    return ref, cur


# -- workers (each in its own process) --------------------------------------------------------------


def worker_tollgate(path: str) -> dict[str, Any]:
    from evals.drift import stats

    ref, cur = _load(path)
    base = peak_mb()
    stats.ks_pvalue(0.01, 1000, 1000)  # scipy's and pyarrow's imports, paid once per process, not per window
    stats.value_counts(["warm-up"])
    stats.chi_square(np.array([5, 5]), np.array([4, 6]))
    t0 = time.perf_counter()
    summary = {}
    for c in NUMERIC:
        s = np.sort(ref[c])
        edges = stats.quantile_edges(s)
        summary[c] = (s, edges, stats.bin_counts(s, edges), float(s.std()))
    ref_counts = stats.value_counts(ref[CATEGORICAL])
    t1 = time.perf_counter()
    values: dict[str, float] = {}
    for c in NUMERIC:
        ns = stats.numeric_stats(*summary[c], cur[c])
        values.update({f"{c}.ks_stat": ns.ks_stat, f"{c}.ks_pvalue": ns.ks_pvalue, f"{c}.wasserstein": ns.wasserstein,
                       f"{c}.wasserstein_norm": ns.wasserstein_norm, f"{c}.psi": ns.psi,
                       f"{c}.jensenshannon": ns.jensenshannon})
    cs = stats.categorical_stats(ref_counts, stats.value_counts(cur[CATEGORICAL]))
    values.update({f"{CATEGORICAL}.psi": cs.psi, f"{CATEGORICAL}.chi2": cs.chi2,
                   f"{CATEGORICAL}.chi2_pvalue": cs.chi2_pvalue, f"{CATEGORICAL}.jensenshannon": cs.jensenshannon})
    t2 = time.perf_counter()
    return {"summary_s": t1 - t0, "window_s": t2 - t1, "total_s": t2 - t0, "values": values,
            "peak_mb": peak_mb(), "data_mb": base}


def worker_scipy(path: str) -> dict[str, Any]:
    from scipy import stats as sps
    from scipy.spatial import distance

    ref, cur = _load(path)
    base = peak_mb()
    sps.kstwo.sf(0.01, 1000)
    t0 = time.perf_counter()
    values: dict[str, float] = {}
    for c in NUMERIC:
        a, b = ref[c], cur[c]
        ks = sps.ks_2samp(a, b)
        w = float(sps.wasserstein_distance(a, b))
        edges = np.unique(np.quantile(a, np.arange(1, 10) / 10))
        ra = np.bincount(np.searchsorted(edges, a, side="left"), minlength=edges.size + 1)
        rb = np.bincount(np.searchsorted(edges, b, side="left"), minlength=edges.size + 1)
        pa_, pb_ = np.maximum(ra / a.size, 1e-4), np.maximum(rb / b.size, 1e-4)
        values.update({f"{c}.ks_stat": float(ks.statistic), f"{c}.ks_pvalue": float(ks.pvalue),
                       f"{c}.wasserstein": w, f"{c}.wasserstein_norm": w / max(float(np.std(a)), 0.001),
                       f"{c}.psi": float(np.sum((pb_ - pa_) * np.log(pb_ / pa_))),
                       f"{c}.jensenshannon": float(distance.jensenshannon(ra, rb))})
    cats, rc = np.unique(ref[CATEGORICAL], return_counts=True)
    cats2, cc = np.unique(cur[CATEGORICAL], return_counts=True)
    allc = sorted(set(cats) | set(cats2))
    r = np.array([dict(zip(cats, rc, strict=True)).get(k, 0) for k in allc])
    q = np.array([dict(zip(cats2, cc, strict=True)).get(k, 0) for k in allc])
    chi = sps.chi2_contingency(np.vstack([r, q]), correction=False)
    pr, pq_ = np.maximum(r / r.sum(), 1e-4), np.maximum(q / q.sum(), 1e-4)
    values.update({f"{CATEGORICAL}.psi": float(np.sum((pq_ - pr) * np.log(pq_ / pr))),
                   f"{CATEGORICAL}.chi2": float(chi.statistic), f"{CATEGORICAL}.chi2_pvalue": float(chi.pvalue),
                   f"{CATEGORICAL}.jensenshannon": float(distance.jensenshannon(r, q))})
    t1 = time.perf_counter()
    return {"total_s": t1 - t0, "values": values, "peak_mb": peak_mb(), "data_mb": base}


def _evidently_run(ref: Any, cur: Any, numeric: list[str], categorical: list[str]) -> dict[str, Any]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    dd = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    snap = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur, data_definition=dd),
                                          Dataset.from_pandas(ref, data_definition=dd))
    out: dict[str, Any] = {"columns": {}}
    for m in snap.dict()["metrics"]:
        cfg = m["config"]
        if cfg.get("type", "").endswith("DriftedColumnsCount"):
            out["share"] = float(m["value"]["share"])
            out["dataset_drift"] = out["share"] >= float(cfg.get("drift_share", 0.5))
        elif cfg.get("type", "").endswith("ValueDrift"):
            out["columns"][cfg["column"]] = {"method": cfg["method"], "value": float(m["value"]),
                                             "threshold": float(cfg["threshold"]),
                                             "drift": float(m["value"]) >= float(cfg["threshold"])}
    return out


def worker_evidently(path: str) -> dict[str, Any]:
    t_import = time.perf_counter()
    import evidently  # noqa: F401
    import pandas as pd
    t_import = time.perf_counter() - t_import
    ref, cur = _load(path)
    t0 = time.perf_counter()
    rdf, cdf = pd.DataFrame(ref), pd.DataFrame(cur)
    t1 = time.perf_counter()
    res = _evidently_run(rdf, cdf, list(NUMERIC), [CATEGORICAL])
    t2 = time.perf_counter()
    return {"import_s": t_import, "frame_s": t1 - t0, "total_s": t2 - t1, "result": res, "peak_mb": peak_mb()}


def worker_evidently_windows(path: str) -> dict[str, Any]:
    """Evidently's defaults on saved (reference, current) frame pairs: flags per pair."""
    import pandas as pd

    with np.load(path, allow_pickle=False) as d:
        data = {k: d[k] for k in d.files}
    pairs = json.loads(bytes(data.pop("pairs")).decode())
    cols = list(FRAME_NUMERIC) + list(FRAME_CATEGORICAL)
    frame = pd.DataFrame({c: data[f"col_{c}"] for c in cols})
    out = []
    t0 = time.perf_counter()
    for pair in pairs:
        ref = frame.iloc[np.asarray(data[pair["ref"]])].reset_index(drop=True)
        cur = frame.iloc[np.asarray(data[pair["cur"]])].reset_index(drop=True)
        res = _evidently_run(ref, cur, list(FRAME_NUMERIC), list(FRAME_CATEGORICAL))
        out.append({"dataset_drift": res.get("dataset_drift", False),
                    "drifted": sorted(c for c, v in res["columns"].items() if v["drift"])})
    return {"results": out, "seconds": time.perf_counter() - t0}


WORKERS = {"tollgate": worker_tollgate, "scipy": worker_scipy, "evidently": worker_evidently,
           "evidently-windows": worker_evidently_windows}


# -- the driver ---------------------------------------------------------------------------------------


def ensure_evidently() -> Path:
    py = EVIDENTLY_ENV / "bin" / "python"
    ok = py.is_file() and subprocess.run([str(py), "-c", "import evidently, pandas; assert pandas.__version__ < '3'"],
                                         capture_output=True).returncode == 0
    if not ok:
        uv = ROOT / ".tollgate" / "tools" / "bin" / "uv"
        print(f"creating {EVIDENTLY_ENV} ({', '.join(EVIDENTLY_PINS)}) ...", flush=True)
        subprocess.run([str(uv), "venv", "-q", "-p", "3.11", str(EVIDENTLY_ENV)], check=True)
        subprocess.run([str(uv), "pip", "install", "-q", "-p", str(py), *EVIDENTLY_PINS], check=True)
    return py


def run_worker(python: str, name: str, path: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), DO_NOT_TRACK="1", EVIDENTLY_DISABLE_TELEMETRY="1")
    p = subprocess.run([python, str(Path(__file__)), "--worker", name, str(path)], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"worker {name} failed:\n{p.stderr[-3000:]}")
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


def part_speed(rows: int, tmp: Path, evidently_py: Path | None) -> dict[str, Any]:
    path = tmp / "speed.npz"
    make_speed_data(rows, path)
    tg = run_worker(sys.executable, "tollgate", path)
    sp = run_worker(sys.executable, "scipy", path)
    ev = run_worker(str(evidently_py), "evidently", path) if evidently_py else None
    diff_scipy = max(abs(tg["values"][k] - sp["values"][k]) for k in tg["values"])
    worst_key = max(tg["values"], key=lambda k: abs(tg["values"][k] - sp["values"][k]))
    out = {"rows": rows, "tollgate": tg, "scipy": sp, "evidently": ev, "max_abs_diff_vs_scipy": diff_scipy,
           "worst_vs_scipy": worst_key}
    print(f"\n## speed: {rows:,} + {rows:,} rows x 7 columns (6 numeric, 1 categorical)\n")
    print("| implementation | time (s) | peak RSS (MB) | notes |\n|---|---|---|---|")
    print(f"| evals.drift: one window | {tg['window_s']:.3f} | {tg['peak_mb']:.0f} | reference summary "
          f"(once per champion) {tg['summary_s']:.3f} s; data loaded {tg['data_mb']:.0f} MB |")
    print(f"| evals.drift: summary + window | {tg['total_s']:.3f} | | |")
    print(f"| plain scipy | {sp['total_s']:.3f} | {sp['peak_mb']:.0f} | KS, Wasserstein, JS, chi2, PSI |")
    if ev:
        print(f"| Evidently 0.7.23 DataDriftPreset | {ev['total_s']:.3f} | {ev['peak_mb']:.0f} | + DataFrame build "
              f"{ev['frame_s']:.2f} s, import {ev['import_s']:.1f} s |")
        diffs = []
        for c, v in ev["result"]["columns"].items():
            ours = tg["values"][f"{c}.wasserstein_norm" if c != CATEGORICAL else f"{c}.jensenshannon"]
            diffs.append((c, v["method"], ours, v["value"], abs(ours - v["value"])))
        out["vs_evidently"] = diffs
        out["max_abs_diff_vs_evidently"] = max(d[4] for d in diffs)
        out["speedup_vs_evidently_window"] = ev["total_s"] / tg["window_s"]
        out["speedup_vs_evidently_total"] = ev["total_s"] / tg["total_s"]
        print(f"\nspeed-up vs Evidently: {out['speedup_vs_evidently_window']:.1f}x per window, "
              f"{out['speedup_vs_evidently_total']:.1f}x with the reference summary; vs scipy "
              f"{sp['total_s'] / tg['window_s']:.1f}x per window")
        print("\n| column | Evidently method | evals.drift | Evidently | abs diff |\n|---|---|---|---|---|")
        for c, m, a, b, d in diffs:
            print(f"| {c} | {m} | {a:.12g} | {b:.12g} | {d:.2g} |")
    print(f"\nmax |evals.drift - scipy| over {len(tg['values'])} values: {diff_scipy:.2g} ({worst_key})")
    return out


def part_checks(tmp: Path) -> dict[str, Any]:
    import great_expectations  # noqa: F401 - import cost reported apart

    from evals.drift import checks, synthetic
    from evals.drift.source import Window

    table = synthetic.window(1_000_000, seed=21)
    w = Window("synthetic", table)
    res = {}
    for label, cap in (("gx on a 200k sample", 200_000), ("gx on every row", checks.GX_MAX_ROWS)):
        t = time.perf_counter()
        wc = checks.check_window(w, "current", 1000, gx_max_rows=cap)
        res[label] = {"seconds": time.perf_counter() - t, "passed": wc.passed, "gx_rows": wc.gx_rows}
    print("\n## checks: one 1,000,000-row request-log window\n\n| checks | time (s) | GX rows | passed |\n|---|---|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v['seconds']:.2f} | {v['gx_rows']:,} | {v['passed']} |")
    return res


def part_embeddings(n: int) -> dict[str, Any]:
    from evals.drift import embedding, synthetic
    from evals.embeddings import embed

    rng = np.random.default_rng(31)
    topics = np.array(synthetic.TOPICS)
    ref_t = synthetic.prompts(rng.choice(topics, n), np.round(rng.lognormal(4.0, 0.5, n)).astype(int), rng)
    cur_topic = np.where(rng.random(n) < 0.05, "legal", rng.choice(topics, n))
    cur_t = synthetic.prompts(cur_topic, np.round(rng.lognormal(4.0, 0.5, n)).astype(int), rng)
    embed(["warm up"])
    old = embedding.MAX_EMBED
    embedding.MAX_EMBED = max(old, n)
    try:
        t0 = time.perf_counter()
        summary = embedding.summarise(ref_t)
        t1 = time.perf_counter()
        assert summary is not None
        d = embedding.compare(summary, cur_t)
        t2 = time.perf_counter()
    finally:
        embedding.MAX_EMBED = old
    out = {"prompts": n, "summary_s": t1 - t0, "window_s": t2 - t1, "total_s": t2 - t0,
           "far_share": d.far_share, "far_pvalue": d.far_pvalue, "mmd2": d.mmd2, "mmd_pvalue": d.mmd_pvalue,
           "prompts_per_s": 2 * n / (t2 - t0)}
    print(f"\n## embeddings: {n:,} + {n:,} prompts (5 % new topic in the current window)\n")
    print("| step | time (s) |\n|---|---|")
    print(f"| reference summary (embed {n:,}, k-means, bandwidth) | {out['summary_s']:.1f} |")
    print(f"| window (embed {n:,}, far share, MMD 1000+1000 x 500 permutations) | {out['window_s']:.1f} |")
    print(f"| total | {out['total_s']:.1f} ({out['prompts_per_s']:.0f} prompts/s) |")
    print(f"\nfar share {d.far_share:.3f} (p {d.far_pvalue:.2g}), MMD^2 {d.mmd2:.4f} (p {d.mmd_pvalue:.3g})")
    return out


def _frame_columns(table: Any) -> dict[str, np.ndarray]:
    """Per request row, the features evals.drift measures (NaN where a value is absent), for Evidently."""
    import pyarrow.compute as pc

    from evals.drift import features

    req = features.requests_with_feedback(table)
    cols: dict[str, np.ndarray] = {}
    for c in ("prompt_tokens", "output_tokens", "ttft_s", "duration_s", "feedback_score"):
        cols[c] = np.asarray(pc.cast(req[c], "float64").to_numpy(zero_copy_only=False), dtype=np.float64)
    for c in ("refusal", "fallback"):
        cols[c] = np.asarray(pc.cast(req[c], "float64").to_numpy(zero_copy_only=False), dtype=np.float64)
    cols["guardrail_hits"] = np.asarray(pc.fill_null(pc.list_value_length(req["guardrail_hits"]), 0).to_numpy(),
                                        dtype=np.float64)
    cols["status"] = np.asarray(pc.cast(req["status"], "string").to_pylist(), dtype=str)
    for c in ("arm", "language", "topic"):
        cols[c] = np.asarray(pc.fill_null(req[c], features.MISSING).to_pylist(), dtype=str)
    cols["answer_class"] = np.asarray(features.answer_class(req["output_text"]).to_pylist(), dtype=str)
    return cols


def _ours_drift(ref_table: Any, cur_table: Any, thresholds: Any) -> tuple[bool, list[str], bool]:
    """(drift by thresholds/drift.yaml, the broken gates, naive: any raw p < 0.01)."""
    from evals import gates
    from evals.drift import compare, features, reference

    ref = reference.summarise(features.extract(ref_table, with_text=False), with_embeddings=False)
    cur = features.extract(cur_table, with_text=False)
    comp = compare.compare(ref, cur, alpha=0.01, embeddings=False)
    metrics = dict(comp.metrics, drift_checks_passed=1.0, reference_rows=float(ref.rows), current_rows=float(cur.rows))
    v = gates.evaluate(thresholds, {"metrics": metrics})
    naive = any(t.pvalue < 0.01 for t in comp.tests.values())
    return (not v.passed), [g.name for g in v.failed], naive


def _thresholds(min_rows: int) -> Any:
    import dataclasses

    from evals import gates

    t = gates.load_threshold_file(ROOT / "thresholds" / "drift.yaml")
    return dataclasses.replace(t, gates=tuple(dataclasses.replace(g, bound=float(min_rows))
                                              if g.metric in ("reference_rows", "current_rows") else g
                                              for g in t.gates))


def _save_pairs(path: Path, cols: dict[str, np.ndarray], pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    arrays: dict[str, np.ndarray] = {f"col_{k}": v for k, v in cols.items()}
    meta = []
    for i, (r, c) in enumerate(pairs):
        arrays[f"r{i}"], arrays[f"c{i}"] = r, c
        meta.append({"ref": f"r{i}", "cur": f"c{i}"})
    arrays["pairs"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)  # type: ignore[arg-type]


def part_false_alarms(splits: int, tmp: Path, evidently_py: Path | None) -> dict[str, Any]:
    import pyarrow as pa

    from evals.drift import synthetic

    sample = synthetic.window(20_000, seed=41)
    thresholds = _thresholds(1000)
    rng = np.random.default_rng(42)
    pairs, ours, naive, fired = [], 0, 0, {}
    t0 = time.perf_counter()
    for _ in range(splits):
        perm = rng.permutation(sample.num_rows)
        r, c = np.sort(perm[:10_000]), np.sort(perm[10_000:])
        pairs.append((r, c))
        drift, broken, raw = _ours_drift(sample.take(pa.array(r)), sample.take(pa.array(c)), thresholds)
        ours += drift
        naive += raw
        for g in broken:
            fired[g] = fired.get(g, 0) + 1
    ours_s = time.perf_counter() - t0
    out: dict[str, Any] = {"splits": splits, "ours_rate": ours / splits, "naive_rate": naive / splits,
                           "ours_fired": fired, "ours_s": ours_s}
    if evidently_py:
        path = tmp / "splits.npz"
        _save_pairs(path, _frame_columns(sample), pairs)
        ev = run_worker(str(evidently_py), "evidently-windows", path)
        out["evidently_dataset_rate"] = sum(r["dataset_drift"] for r in ev["results"]) / splits
        out["evidently_any_column_rate"] = sum(bool(r["drifted"]) for r in ev["results"]) / splits
        out["evidently_s"] = ev["seconds"]
    print(f"\n## false alarms: {splits} undrifted 10,000 / 10,000 splits of one 20,000-request sample\n")
    print("| rule | windows called drift |\n|---|---|")
    print(f"| evals.drift, thresholds/drift.yaml (BH q < 0.01 AND minimum effect) | {out['ours_rate']:.1%} |")
    print(f"| naive: any raw p < 0.01 among the same tests (no correction, no effect) | {out['naive_rate']:.1%} |")
    if evidently_py:
        print(f"| Evidently defaults: dataset drift (>= 50 % of columns) | {out['evidently_dataset_rate']:.1%} |")
        print(f"| Evidently defaults: any column drifted | {out['evidently_any_column_rate']:.1%} |")
    return out


SHIFTS = {
    "prompt length +10 %": lambda s: {"prompt_length": 1 + 0.10 * s},
    "refusal share +5 points": lambda s: {"refusal_points": 0.05 * s},
    "5 % new language/topic": lambda s: {"new_language_share": 0.05 * s},
}
RELEVANT = {"prompt length +10 %": "prompt_tokens", "refusal share +5 points": "refusal",
            "5 % new language/topic": "language"}


def part_detect(tmp: Path, evidently_py: Path | None, windows: int = 15, size: int = 1000) -> dict[str, Any]:
    import pyarrow as pa

    from evals.drift import synthetic

    ref = synthetic.window(5 * size, seed=51)
    thresholds = _thresholds(size)
    out: dict[str, Any] = {}
    for si, (label, make) in enumerate(SHIFTS.items()):
        tables = [synthetic.window(size, seed=600 + 20 * si + k, shift=synthetic.Shift(**make(min(1.0, k / 10))))
                  for k in range(1, windows + 1)]
        first, gates_fired = None, []
        for k, t in enumerate(tables, start=1):
            drift, broken, _ = _ours_drift(ref, t, thresholds)
            if drift and first is None:
                first, gates_fired = k, broken
        row: dict[str, Any] = {"ours_first": first, "ours_gates": gates_fired}
        if evidently_py:
            allt = pa.concat_tables([ref, *tables])
            cols = _frame_columns(allt)
            idx = np.arange(allt.num_rows)
            pairs = [(idx[: ref.num_rows], idx[ref.num_rows + k * size: ref.num_rows + (k + 1) * size])
                     for k in range(windows)]
            path = tmp / f"detect{si}.npz"
            _save_pairs(path, cols, pairs)
            ev = run_worker(str(evidently_py), "evidently-windows", path)["results"]
            col = RELEVANT[label]
            row["evidently_dataset_first"] = next((k + 1 for k, r in enumerate(ev) if r["dataset_drift"]), None)
            row["evidently_column_first"] = next((k + 1 for k, r in enumerate(ev) if col in r["drifted"]), None)
            row["evidently_any_first"] = next((k + 1 for k, r in enumerate(ev) if r["drifted"]), None)
        out[label] = row
    print(f"\n## windows to detect ({size:,}-request windows vs a {5 * size:,}-request reference; the shift grows "
          f"linearly to its full size at window 10; '-' = not within {windows})\n")
    print("| shift | evals.drift (gates) | Evidently: dataset drift | Evidently: that column | Evidently: any column |")
    print("|---|---|---|---|---|")
    for label, r in out.items():
        def f(v: Any) -> str:
            return "-" if v is None else str(v)
        print(f"| {label} | {f(r['ours_first'])} ({', '.join(r['ours_gates'][:3])}) | "
              f"{f(r.get('evidently_dataset_first'))} | {f(r.get('evidently_column_first'))} | "
              f"{f(r.get('evidently_any_first'))} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_drift", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--splits", type=int, default=100)
    p.add_argument("--prompts", type=int, default=10_000)
    p.add_argument("--parts", default="speed,checks,embeddings,false_alarms,detect")
    p.add_argument("--no-evidently", action="store_true", help="skip Evidently (no PyPI access)")
    p.add_argument("--json", help="also write all numbers here")
    p.add_argument("--worker", nargs=2, metavar=("NAME", "DATA"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker[0]](args.worker[1])))
        return 0
    parts = set(args.parts.split(","))
    evidently_py = None if args.no_evidently else ensure_evidently()
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as d:
        tmp = Path(d)
        if "speed" in parts:
            results["speed"] = part_speed(args.rows, tmp, evidently_py)
        if "checks" in parts:
            results["checks"] = part_checks(tmp)
        if "embeddings" in parts:
            results["embeddings"] = part_embeddings(args.prompts)
        if "false_alarms" in parts:
            results["false_alarms"] = part_false_alarms(args.splits, tmp, evidently_py)
        if "detect" in parts:
            results["detect"] = part_detect(tmp, evidently_py)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
