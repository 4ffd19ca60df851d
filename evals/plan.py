"""How many items a comparison needs: sample-size planning from the champion's per-item results.

    python -m evals.plan --metric task_success --mde 0.02 --power 0.95 --alpha 0.05 \
        [--results champion-quality.json [--results another-run.json]] [--json]

Prints the items needed to detect a drop of ``--mde`` (absolute points of the metric)
with ``--power`` at two-sided ``--alpha`` (the 95 % intervals the gates read):

- unpaired: candidate and champion on different items (Cohen's h for pass/fail,
  statsmodels ``NormalIndPower``; a pooled two-sample t for scores, ``TTestIndPower``);
- paired: both on the same items, as the promotion's regression gate runs
  (``TTestPower`` on the per-item differences). The spread of those differences comes
  from two recorded runs on the same items when two ``--results`` are given (the
  run-to-run noise of the champion); with one, a pass/fail metric assumes no noise (the
  discordant items are the drop itself, the fewest items any design can need) and a
  score assumes independent runs (the most).

Without ``--results`` the newest ``./tollgate evaluate`` quality results under
``$TOLLGATE_HOME/demo`` are read. Exit 0; 2 on bad input (a file that is not results, a
metric it lacks).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evals import paired, settings
from evals.errors import EXIT_PASS, BadInput
from evals.gates import per_item
from evals.results import load_results
from evals.settings import fraction, number

ALIASES = {"task_success": "task_success_rate", "exact_match": "exact_match_rate", "quality": "quality_score"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals.plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--metric", required=True, help="per-item metric, e.g. task_success (task_success_rate), "
                   "exact_match, token_f1, quality")
    p.add_argument("--mde", required=True, type=lambda r: number(float, above=0, maximum=1)("--mde", r),
                   help="the drop to detect, absolute points (0.02 = two points)")
    p.add_argument("--power", default=0.8, type=lambda r: number(float, above=0, maximum=0.9999)("--power", r),
                   help="chance of detecting the drop (default 0.8)")
    p.add_argument("--alpha", default=0.05, type=lambda r: fraction("--alpha", r), help="two-sided (default 0.05)")
    p.add_argument("--results", action="append", default=[],
                   help="the champion's results JSON (repeat: a second run on the same items measures noise)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    return p


def _default_results() -> list[str]:
    demo = settings.home() / "demo"
    found = sorted(demo.glob("*/quality.json")) if demo.is_dir() else []
    if not found:
        raise BadInput(f"--results: none given and no ./tollgate evaluate results under {demo}")
    return [str(found[-1])]


def plan(metric: str, mde: float, power: float, alpha: float, runs: Sequence[dict[str, float]]) -> dict[str, Any]:
    """The plan for ``metric`` from one or two runs' {item id: value}; pure, for tests and benchmarks."""
    first = list(runs[0].values())
    binary = paired.is_binary(first)
    mean = sum(first) / len(first)
    out: dict[str, Any] = {"metric": metric, "mde": mde, "power": power, "alpha": alpha, "items": len(first),
                           "champion_mean": mean, "binary": binary}
    two = len(runs) > 1
    ids, a, b = paired.pair_by_id(runs[0], runs[1]) if two else ([], [], [])
    if binary:
        out["unpaired_n"] = paired.unpaired_n(mean, mde, alpha=alpha, power=power)
        noise = paired.discordance(a, b) if two else 0.0
        out["discordance_noise"] = noise
        sd = paired.binary_difference_sd(mde, noise + mde)
        out["assumption"] = f"run-to-run discordance measured on {len(ids)} shared items" if two else \
            "no run-to-run noise: the discordant items are the drop itself"
    else:
        from statsmodels.stats.power import TTestIndPower

        sd1 = float(_sd(first))
        if sd1 <= 0:
            raise BadInput(f"--metric {metric}: every item has the same value; nothing to plan")
        out["unpaired_n"] = math.ceil(TTestIndPower().solve_power(effect_size=mde / sd1, alpha=alpha, power=power,
                                                                  ratio=1.0, alternative="two-sided"))
        diffs = [x - y for x, y in zip(a, b, strict=True)]
        sd = float(_sd(diffs)) if two and _sd(diffs) > 0 else math.sqrt(2) * sd1
        out["assumption"] = (f"sd of per-item differences measured on {len(ids)} shared items" if two and
                             _sd(diffs) > 0 else "independent runs: sd of a difference = sqrt(2) x sd")
    out["difference_sd"] = sd
    out["paired_n"] = paired.paired_n(mde, sd, alpha=alpha, power=power)
    out["enough_paired"] = len(first) >= out["paired_n"]
    return out


def _sd(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def render(p: dict[str, Any], sources: Sequence[str]) -> str:
    lines = [
        f"metric {p['metric']}: champion {p['champion_mean']:.3f} on {p['items']} items ({', '.join(sources)})",
        f"drop to detect: {p['mde']:g} (power {p['power']:g}, two-sided alpha {p['alpha']:g})",
        f"unpaired: {p['unpaired_n']} items per version",
        f"paired:   {p['paired_n']} items (sd of the per-item difference {p['difference_sd']:.4f}; {p['assumption']})",
        (f"dataset:  {p['items']} items: enough for the paired design" if p["enough_paired"] else
         f"dataset:  {p['items']} items: TOO SMALL to detect this drop paired (needs {p['paired_n']})"),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    metric = ALIASES.get(args.metric, args.metric)
    sources = args.results or _default_results()
    if len(sources) > 2:
        raise BadInput("--results: give one or two results files of the champion")
    runs = []
    for src in sources:
        values = per_item(load_results(src, "--results"), metric)
        if not values:
            raise BadInput(f"--results {src}: no per-item {metric} scores")
        runs.append(values)
    result = plan(metric, args.mde, args.power, args.alpha, runs)
    print(json.dumps(result, indent=2) if args.json else render(result, [Path(s).name for s in sources]), end="\n"
          if args.json else "")
    return EXIT_PASS


if __name__ == "__main__":
    from evals._cli import exit_with

    exit_with(main)
