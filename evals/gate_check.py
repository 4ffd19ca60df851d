"""Judge a results file against a threshold file.

    python -m evals.gate_check --results results/quality.json --threshold-file thresholds/quality.yaml \
        [--baseline results/champion-quality.json] [--output verdict.json] [--report report.md]
        [--production-threshold-file thresholds/quality.yaml] [--establish-baseline]

`--production-threshold-file` judges the same evidence against production's gates too and
reports that verdict beside the deciding one (it never changes the exit code).
`--establish-baseline` lets comparison gates with no earlier measurement pass as
"baseline established" (a fresh install's first evaluate); a promotion never passes it.

Exit 0 when every gate passes, 1 when any fails (fail closed on missing, null, NaN or
non-numeric metrics), 2 on bad input with one line naming the file and key. A gate on
a metric the suite never produces (a typo) is bad input: the suite is the results'
``meta.suite``, else the threshold file's stem, and evals.catalogue lists its names.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evals import catalogue, gates
from evals.errors import EXIT_FAIL, EXIT_PASS
from evals.results import load_results, sha256_file, utc_now, write_json_atomic

log = logging.getLogger("tollgate.gate_check")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals.gate_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", required=True, help="results JSON (metrics, samples, meta)")
    p.add_argument("--threshold-file", required=True, help="gate YAML, e.g. thresholds/quality.yaml")
    p.add_argument("--baseline", help="baseline results JSON (the current champion's) to derive *_delta_vs_baseline")
    p.add_argument("--output", help="write the JSON verdict here")
    p.add_argument("--report", help="write the markdown gate table here")
    p.add_argument("--production-threshold-file", help="also judge the evidence against this (production) gate "
                   "file and report it beside the deciding verdict; it does not change the exit code")
    p.add_argument("--establish-baseline", action="store_true",
                   help="comparison gates without any earlier measurement pass as 'baseline established'")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Read and validate every input before writing anything: bad input has no side effects.
    thresholds = gates.load_threshold_file(args.threshold_file)
    results = load_results(args.results, "--results")
    baseline = load_results(args.baseline, "--baseline") if args.baseline else None
    production = gates.load_threshold_file(args.production_threshold_file, "--production-threshold-file") \
        if args.production_threshold_file else None
    raw_meta = results.get("meta")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    # A gate on a metric the suite never produces is a typo (exit 2); one a run lacks fails closed below.
    gates.check_metrics(thresholds, catalogue.suite_for(meta.get("suite"), args.threshold_file))
    if production is not None:
        gates.check_metrics(production, catalogue.suite_for(meta.get("suite"), args.production_threshold_file))
    verdict = gates.evaluate(thresholds, results, baseline, establish_baseline=args.establish_baseline)
    prod_verdict = gates.evaluate(production, results, baseline) if production is not None else None

    subject = ":".join(str(meta[k]) for k in ("model", "version") if meta.get(k)) or Path(args.results).name
    suite = meta.get("suite") or Path(args.threshold_file).stem
    payload = {
        "passed": verdict.passed,
        "failed_gates": [g.name for g in verdict.failed],
        "gates": [g.to_dict() for g in verdict.gates],
        "subject": subject,
        "suite": suite,
        "thresholds_file": str(args.threshold_file),
        "thresholds_sha256": sha256_file(args.threshold_file),
        "results_file": str(args.results),
        "results_sha256": sha256_file(args.results),
        "baseline_file": str(args.baseline) if args.baseline else None,
        "baseline_sha256": sha256_file(args.baseline) if args.baseline else None,
        "evaluated_utc": utc_now(),
        "profile": thresholds.profile or Path(args.threshold_file).parent.name,
        "judge": _judge_line(results),
    }
    profile = payload["profile"]
    report = gates.markdown_report(verdict, f"{suite} gates for {subject} ({profile} profile, deciding)")
    if prod_verdict is not None and production is not None:
        payload["production"] = {
            "passed": prod_verdict.passed, "failed_gates": [g.name for g in prod_verdict.failed],
            "gates": [g.to_dict() for g in prod_verdict.gates],
            "thresholds_file": str(args.production_threshold_file),
            "thresholds_sha256": sha256_file(args.production_threshold_file),
        }
        report += "\n" + gates.markdown_report(
            prod_verdict, f"{suite} gates for {subject} (production thresholds, same evidence, not deciding)")
    if args.output:
        write_json_atomic(args.output, payload)
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(report)
    print(report, end="")
    for g in verdict.failed:
        log.warning("gate %s failed: %s", g.name, g.reason)
    return EXIT_PASS if verdict.passed else EXIT_FAIL


def _judge_line(results: dict) -> str | None:
    """Which judge scored the judge metrics, or why none did (quality results only)."""
    judge = (results.get("meta") or {}).get("judge")
    if not isinstance(judge, dict):
        return None
    if judge.get("judged") is False:
        return f"{gates.NOT_JUDGED}: {judge.get('reason', 'no independent judge')}"
    return f"{judge.get('model')} at {judge.get('endpoint')}"


if __name__ == "__main__":
    from evals._cli import exit_with

    exit_with(main)
