"""Compare a current window of request logs with a reference and decide: drift or not.

    python -m evals.drift --reference REF --current CUR --output results/drift.json \
        [--thresholds thresholds/drift.yaml] [--warn-thresholds thresholds/drift.warn.yaml] \
        [--reference-start T --reference-end T] [--current-start T --current-end T] \
        [--alpha 0.01] [--min-rows N] [--persistence N --state FILE] [--save-reference REF.npz] \
        [--no-embeddings] [--model NAME:VERSION] [--report drift.md]

REF and CUR are an ``s3://BUCKET/PREFIX``, a local folder or one Parquet file of the
request log (evals.requestlog); REF may also be a stored reference summary (``.npz``,
written by ``--save-reference``), which skips re-reading the reference. Times are ISO 8601
(UTC when no offset) and select ``start <= ts < end``.

Order: both windows are read and checked (evals.drift.checks: schema, NaN/inf, row count,
Great Expectations) before any statistic; a window that fails is a *failed check*
(``verdict.status = "check_failed"``, exit 1), never a drift verdict. Then features,
statistics, Benjamini-Hochberg across all tests, the gates of the threshold file, the
warning gates and the persistence rule.

Exit 0: no drift (warnings allowed); 1: drift, or a failed check (the verdict's status
says which); 2: bad input (one line on stderr, nothing written). The results file is the
pod results schema (evals.results) plus a ``verdict`` section: ``python -m evals.gate_check
--results drift.json --threshold-file thresholds/drift.yaml`` reaches the same pass/fail.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from evals import gates, settings
from evals._cli import flag_type
from evals.drift import checks, features, persistence, reference
from evals.drift.compare import Comparison, compare, neutral
from evals.drift.source import read_source
from evals.errors import EXIT_FAIL, EXIT_PASS, BadInput
from evals.results import build_meta, parse_model_ref, sha256_file, utc_now, write_results

log = logging.getLogger("tollgate.drift")

THRESHOLDS = settings.REPO_ROOT / "thresholds" / "drift.yaml"
WARN_THRESHOLDS = settings.REPO_ROOT / "thresholds" / "drift.warn.yaml"
SUITE = "drift"  # meta.suite of the results; evals.catalogue.DRIFT lists its metric names
ROW_METRICS = ("reference_rows", "current_rows")
NOT_PERSISTENT = {"drift_checks_passed", *ROW_METRICS}
DEFAULT_MIN_ROWS = 1000

_POSITIVE_INT = flag_type(settings.positive_int)
_ALPHA = flag_type(settings.number(float, above=0.0, maximum=0.5))


def _time(flag: str) -> Any:
    def parse(raw: str) -> datetime:
        from evals import requestlog

        try:
            return requestlog.as_utc(raw)
        except BadInput:
            raise argparse.ArgumentTypeError(f"{raw!r} is not an ISO 8601 time") from None

    parse.__name__ = flag
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals.drift", description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, help="s3:// prefix, folder or Parquet file; or a summary .npz")
    p.add_argument("--current", required=True, help="s3:// prefix, folder or Parquet file of the current window")
    p.add_argument("--output", default="results/drift.json", help="results JSON with the verdict")
    p.add_argument("--thresholds", default=str(THRESHOLDS), help="gate YAML (default thresholds/drift.yaml)")
    p.add_argument("--warn-thresholds", default=str(WARN_THRESHOLDS),
                   help="warning gates (default thresholds/drift.warn.yaml; 'none' for none)")
    for side in ("reference", "current"):
        p.add_argument(f"--{side}-start", type=_time(f"--{side}-start"), help=f"first time of the {side} window")
        p.add_argument(f"--{side}-end", type=_time(f"--{side}-end"), help=f"end (exclusive) of the {side} window")
    p.add_argument("--alpha", type=_ALPHA, default=0.01, help="false discovery rate (Benjamini-Hochberg), default 0.01")
    p.add_argument("--min-rows", type=_POSITIVE_INT, help="minimum request rows per window (default: the gate file)")
    p.add_argument("--persistence", type=_POSITIVE_INT, default=1, help="windows in a row before a gate fails")
    p.add_argument("--state", help="JSON state kept between runs (needed with --persistence > 1)")
    p.add_argument("--window-id", help="id of this window in the state (default: current source and times)")
    p.add_argument("--save-reference", help="write the reference summary here (.npz) for later runs")
    p.add_argument("--no-embeddings", action="store_true", help="skip prompt-embedding drift")
    p.add_argument("--gx-max-rows", type=_POSITIVE_INT, default=checks.GX_MAX_ROWS,
                   help="Great Expectations validates at most this many rows per window (a fixed sample)")
    p.add_argument("--model", help="NAME:VERSION of the champion, for the results' meta")
    p.add_argument("--report", help="also write the gate table as markdown here")
    return p


def _validate(args: argparse.Namespace) -> tuple[gates.ThresholdFile, gates.ThresholdFile | None]:
    if args.persistence > 1 and not args.state:
        raise BadInput("--persistence > 1 needs --state FILE to remember earlier windows")
    for side in ("reference", "current"):
        lo, hi = getattr(args, f"{side}_start"), getattr(args, f"{side}_end")
        if (lo is None) != (hi is None):
            raise BadInput(f"--{side}-start and --{side}-end go together")
        if lo is not None and hi <= lo:
            raise BadInput(f"--{side}-end must be after --{side}-start")
    if args.save_reference and not args.save_reference.endswith(".npz"):
        raise BadInput(f"--save-reference {args.save_reference!r} must end in .npz")
    if reference.is_summary_path(args.current):
        raise BadInput(f"--current {args.current!r}: a reference summary cannot be the current window")
    thresholds = gates.load_threshold_file(args.thresholds, "--thresholds")
    warn = None if args.warn_thresholds == "none" else gates.load_threshold_file(args.warn_thresholds,
                                                                                  "--warn-thresholds")
    # a gate on a name drift never writes is a typo: bad input before any window is read
    for gate_file in (thresholds, warn):
        if gate_file is not None:
            gates.check_metrics(gate_file, SUITE)
    return thresholds, warn


def _min_rows(args: argparse.Namespace, thresholds: gates.ThresholdFile) -> int:
    """--min-rows, else the largest minimum of the row gates, else 1000; the gates then carry it."""
    if args.min_rows is not None:
        return int(args.min_rows)
    bounds = [g.bound for g in thresholds.gates if g.metric in ROW_METRICS and g.is_lower_bound]
    return int(max(bounds)) if bounds else DEFAULT_MIN_ROWS


def _with_min_rows(thresholds: gates.ThresholdFile, min_rows: int) -> gates.ThresholdFile:
    new = [dataclasses.replace(g, bound=float(min_rows)) if g.metric in ROW_METRICS else g for g in thresholds.gates]
    for metric in ROW_METRICS:
        if not any(g.metric == metric for g in new):
            new.append(gates.Gate(name=metric, metric=metric, bound=float(min_rows), comparison="gte"))
    return dataclasses.replace(thresholds, gates=tuple(new))


def _reference(args: argparse.Namespace, min_rows: int) -> tuple[reference.ReferenceSummary, checks.WindowChecks | None]:
    if reference.is_summary_path(args.reference):
        return reference.load(args.reference), None
    window = read_source(args.reference, start=args.reference_start, end=args.reference_end, flag="--reference")
    wc = checks.check_window(window, "reference", min_rows, gx_max_rows=args.gx_max_rows)
    info = {"source": args.reference, "files": len(window.files), "built_utc": utc_now(),
            "start": args.reference_start.isoformat() if args.reference_start else None,
            "end": args.reference_end.isoformat() if args.reference_end else None}
    feats = features.extract(window.table, with_text=not args.no_embeddings)
    summary = reference.summarise(feats, info=info, with_embeddings=not args.no_embeddings) if wc.passed else \
        reference.ReferenceSummary(rows=wc.rows, info=info)
    return summary, wc


def _apply_persistence(args: argparse.Namespace, thresholds: gates.ThresholdFile,
                       metrics: dict[str, Any]) -> dict[str, Any]:
    """Hold back gates broken in fewer than --persistence consecutive windows (see persistence.py)."""
    raw = gates.evaluate(thresholds, {"metrics": metrics})
    broken = {g.name for g in raw.failed if g.metric not in NOT_PERSISTENT and g.value is not None}
    window_id = args.window_id or "|".join(str(x) for x in (args.current, args.current_start, args.current_end))
    state = persistence.load_state(args.state)
    counts, new_state = persistence.streaks(state, window_id, broken)
    held = []
    for g in thresholds.gates:
        if g.name in broken and counts[g.name] < args.persistence:
            metrics[g.metric + "_window"] = metrics[g.metric]
            metrics[g.metric] = neutral(g.metric)
            held.append(g.name)
    persistence.save_state(args.state, new_state)
    return {"required": args.persistence, "window_id": window_id, "streaks": counts, "held_back": sorted(held),
            "state": args.state}


def _annotate(comp: Comparison, verdict: gates.Verdict, warn: gates.Verdict | None) -> list[str]:
    """Per feature: the gate's bound as its threshold, and drift / warn / ok; returns the drifted metrics."""
    by_metric = {g.metric: g for g in verdict.gates}
    warned = {g.metric for g in (warn.failed if warn else [])}
    drifted = []
    for f in comp.features:
        g = by_metric.get(f.metric)
        if g is None:
            continue
        f.threshold = g.bound
        if f.verdict in ("skipped",):
            continue
        if not g.passed:
            f.verdict = "drift" if f.verdict != "missing" else "missing"
            drifted.append(f.metric)
        elif f.metric in warned:
            f.verdict = "warn"
    return drifted


def _status(check_ok: bool, verdict: gates.Verdict, warn: gates.Verdict | None) -> str:
    if not check_ok:
        return "check_failed"
    if not verdict.passed:
        return "drift"
    return "warn" if warn is not None and not warn.passed else "no_drift"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evals.drift``: read, check, compare, gate, write the verdict."""
    args = build_parser().parse_args(argv)
    thresholds, warn_file = _validate(args)
    min_rows = _min_rows(args, thresholds)
    thresholds = _with_min_rows(thresholds, min_rows)
    name, version = parse_model_ref(args.model, "--model") if args.model else ("unknown", "unknown")
    started, t0 = utc_now(), time.perf_counter()

    ref, ref_checks = _reference(args, min_rows)
    current = read_source(args.current, start=args.current_start, end=args.current_end, flag="--current")
    cur_checks = checks.check_window(current, "current", min_rows, gx_max_rows=args.gx_max_rows)
    window_checks = [c for c in (ref_checks, cur_checks) if c is not None]
    check_ok = all(c.passed for c in window_checks)
    metrics: dict[str, Any] = {"drift_checks_passed": 1.0 if check_ok else 0.0, "reference_rows": float(ref.rows),
                               "current_rows": float(cur_checks.rows)}
    comp = Comparison()
    persist: dict[str, Any] = {"required": args.persistence}
    if check_ok:
        if args.save_reference:
            ref.save(args.save_reference)
        cur = features.extract(current.table, with_text=not args.no_embeddings)
        comp = compare(ref, cur, alpha=args.alpha, embeddings=not args.no_embeddings)
        metrics.update(comp.metrics)
        if args.persistence > 1:
            persist = _apply_persistence(args, thresholds, metrics)
    verdict = gates.evaluate(thresholds, {"metrics": metrics})
    warn = gates.evaluate(warn_file, {"metrics": metrics}) if warn_file is not None and check_ok else None
    drifted = _annotate(comp, verdict, warn)
    status = _status(check_ok, verdict, warn)
    failures = [f for c in window_checks for f in c.failures]
    elapsed = time.perf_counter() - t0

    meta = build_meta(model=name, version=version, suite=SUITE, started=started, reference=args.reference,
                      current=args.current, current_files=len(current.files), alpha=args.alpha, min_rows=min_rows,
                      threshold_file=thresholds.path, thresholds_sha256=sha256_file(thresholds.path),
                      reference_info=ref.info, duration_s=round(elapsed, 3),
                      embeddings=not args.no_embeddings)
    section = {"status": status, "passed": status in ("no_drift", "warn"), "drifted": drifted,
               "check_failures": failures, "checks": [c.to_dict() for c in window_checks],
               "gates": [g.to_dict() for g in verdict.gates],
               "warnings": [g.to_dict() for g in (warn.failed if warn else [])],
               "features": [f.to_dict() for f in comp.features], "persistence": persist}
    write_results(args.output, metrics=metrics, meta=meta, verdict=section)
    if args.report:
        report = gates.markdown_report(verdict, f"drift {args.current}")
        if failures:
            report += "\n**Data checks failed** (no drift verdict):\n" + "\n".join(f"- {f}" for f in failures) + "\n"
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(report)
    why = "; ".join(failures[:2]) if failures else (", ".join(drifted[:6]) or "none")
    print(f"drift {args.current}: {status.upper()} ({ref.rows} reference, {cur_checks.rows} current rows; "
          f"{'failed checks' if failures else 'drifted'}: {why}; {elapsed:.1f} s); results: {args.output}")
    return EXIT_PASS if section["passed"] else EXIT_FAIL
