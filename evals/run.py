"""Run an evaluation suite against a served model and write a results file.

    python -m evals.run --model smollm2-orders:1 --suite quality --output results/quality.json
    python -m evals.run --model smollm2-orders:1 --suite safety  --output results/safety.json

Endpoint: --endpoint, else TOLLGATE_ENDPOINT, else OPENAI_BASE_URL (with or without /v1).
Exit codes: 0 the suite ran; 1 too many samples errored (the results file says which
and why; the affected metrics are null so a gate fails closed); 2 bad input (bad
--model, unreachable endpoint, a model the server does not serve, an invalid dataset,
prompt or policy file). Metric definitions: evals/RUN.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evals import settings
from evals._cli import exit_with
from evals.contract import EVAL_SUITES, MODEL_REF_HELP
from evals.errors import BadInput, CheckFailed
from evals.results import build_meta, load_results, parse_model_ref, utc_now, write_results
from evals.suites import runner
from evals.suites.dataset import default_dataset, load_dataset, select_items
from evals.suites.prompts import default_prompts, load_prompts
from evals.suites.target import check_model_served, make_client, resolve_endpoint

log = logging.getLogger("tollgate.run")

DEFAULT_POLICY = Path(__file__).resolve().parent / "policies" / "safety.yaml"
GROUP_KEY = {"quality": "task", "safety": "category"}
JUDGE_METRICS = ("groundedness_score", "hallucination_rate", "answer_relevancy")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help=MODEL_REF_HELP + " (the served model name)")
    p.add_argument("--suite", required=True, choices=EVAL_SUITES)
    p.add_argument("--output", required=True, help="results JSON to write")
    p.add_argument("--endpoint", help="OpenAI-compatible base URL (default: $TOLLGATE_ENDPOINT or $OPENAI_BASE_URL)")
    p.add_argument("--judge-endpoint", help="an independent judge's base URL (default: $TOLLGATE_JUDGE_ENDPOINT; "
                   "none: judge metrics are recorded as not judged)")
    p.add_argument("--judge-model", help="the judge's served model name (default: $TOLLGATE_JUDGE_MODEL); never "
                   "the model under test")
    p.add_argument("--judge-output", default="json_schema", choices=("json_schema", "json"),
                   help="how the judge's answer is constrained (default: json_schema, guided decoding)")
    p.add_argument("--embeddings-endpoint", help="embeddings base URL for answer relevancy (default: offline hashing)")
    p.add_argument("--embeddings-model", help="embeddings model name on --embeddings-endpoint")
    p.add_argument("--dataset", help="JSONL dataset (default: evals/datasets/<suite>.jsonl)")
    p.add_argument("--prompts", help="prompt set YAML (default: evals/prompts/<suite>.yaml)")
    p.add_argument("--policy", default=str(DEFAULT_POLICY), help="safety policy YAML (safety suite)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default 4)")
    p.add_argument("--limit", type=int, help="evaluate N items, spread over tasks/categories (seeded)")
    p.add_argument("--repeats", type=int, default=1, help="judge repeats per sample, for judge noise (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling, generation and the judge (default 0)")
    p.add_argument("--baseline", help="a previous results file of the same suite: adds quality_delta_vs_baseline")
    p.add_argument("--max-error-share", type=float, default=settings.current().max_error_share,
                   help="fail (exit 1) when more than this share of samples or judgements errored (default 0.2)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds (default 60)")
    p.add_argument("--max-retries", type=int, default=2, help="retries with backoff on 5xx/timeouts (default 2)")
    p.add_argument("--gpu-hour-price", type=float, default=settings.current().gpu_hour_price,
                   help="USD per GPU hour for the cost figures (default $TOLLGATE_GPU_HOUR_PRICE or 2.0)")
    p.add_argument("--hallucination-cutoff", type=float, default=0.5,
                   help="groundedness below this counts as a hallucination (default 0.5)")
    return p


NO_JUDGE = ("no independent judge configured (TOLLGATE_JUDGE_ENDPOINT and TOLLGATE_JUDGE_MODEL, or "
            "--judge-endpoint/--judge-model); the candidate never judges itself")
NOT_JUDGED_METRICS = JUDGE_METRICS + ("judge_error_rate",)


def _same_endpoint(a: str, b: str) -> bool:
    """Two base URLs that reach the same server (localhost and 127.0.0.1 are the same host)."""
    import urllib.parse

    pa, pb = urllib.parse.urlsplit(a.rstrip("/")), urllib.parse.urlsplit(b.rstrip("/"))
    loop = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}  # noqa: S104 - compared, never bound
    host_a, host_b = (pa.hostname or ""), (pb.hostname or "")
    same_host = host_a == host_b or (host_a in loop and host_b in loop)
    port_a = pa.port or (443 if pa.scheme == "https" else 80)
    port_b = pb.port or (443 if pb.scheme == "https" else 80)
    return same_host and port_a == port_b and pa.path.rstrip("/") == pb.path.rstrip("/")


def resolve_judge(flag_endpoint: str | None, flag_model: str | None, endpoint: str,
                  model: str) -> tuple[str, str] | None:
    """(endpoint, model) of an independent judge, None when none is configured.

    A judge that is the candidate (the endpoint under test, or the same model name and
    version) is refused: a model grading its own answers measures nothing.
    """
    env = settings.current()
    raw_endpoint = flag_endpoint or env.judge_endpoint
    judge_model = flag_model or env.judge_model
    if not raw_endpoint and not judge_model:
        return None
    if not raw_endpoint or not judge_model:
        raise BadInput("a judge needs both an endpoint and a model (--judge-endpoint/--judge-model or "
                       "TOLLGATE_JUDGE_ENDPOINT/TOLLGATE_JUDGE_MODEL)")
    judge_endpoint = resolve_endpoint(raw_endpoint, "--judge-endpoint")
    if _same_endpoint(judge_endpoint, endpoint):
        raise BadInput(f"--judge-endpoint {judge_endpoint} is the endpoint under test: the candidate cannot judge "
                       f"itself; configure an independent judge")
    if judge_model == model:
        raise BadInput(f"--judge-model {judge_model!r} is the model under test: the candidate cannot judge itself; "
                       f"configure an independent judge")
    return judge_endpoint, judge_model


def answers_key(dataset_sha256: str, prompts_sha256: str, seed: int, item_ids: list[str]) -> str:
    """What the answers depend on besides the weights: dataset, prompt set (with its params), seed, items.

    A champion's recorded answers are reused for a paired comparison only under the same key.
    """
    import hashlib
    import json

    doc = {"dataset": dataset_sha256, "prompts": prompts_sha256, "seed": seed, "items": item_ids}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _check_numbers(args: argparse.Namespace) -> None:
    if args.concurrency < 1:
        raise BadInput(f"--concurrency {args.concurrency} must be at least 1")
    if args.repeats < 1:
        raise BadInput(f"--repeats {args.repeats} must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise BadInput(f"--limit {args.limit} must be at least 1")
    if not 0.0 <= args.max_error_share <= 1.0:
        raise BadInput(f"--max-error-share {args.max_error_share} must be between 0 and 1")
    if args.timeout <= 0 or args.max_retries < 0:
        raise BadInput("--timeout must be positive and --max-retries not negative")
    if bool(args.embeddings_endpoint) != bool(args.embeddings_model):
        raise BadInput("--embeddings-endpoint and --embeddings-model go together")
    if args.gpu_hour_price < 0:
        raise BadInput(f"--gpu-hour-price {args.gpu_hour_price} must not be negative")
    if not 0.0 <= args.hallucination_cutoff <= 1.0:
        raise BadInput(f"--hallucination-cutoff {args.hallucination_cutoff} must be between 0 and 1")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # one log line per HTTP request drowns the summary; failures are recorded per sample
    for noisy in ("httpx", "httpx2", "openai", "instructor", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    name, version = parse_model_ref(args.model)
    _check_numbers(args)
    started = utc_now()
    endpoint = resolve_endpoint(args.endpoint)
    check_model_served(endpoint, args.model)
    judge_ref = resolve_judge(args.judge_endpoint, args.judge_model, endpoint, args.model) \
        if args.suite == "quality" else None
    if judge_ref is not None:
        check_model_served(judge_ref[0], judge_ref[1], "--judge-model", "--judge-endpoint")

    dataset = load_dataset(args.dataset or default_dataset(args.suite), args.suite)
    prompts = load_prompts(args.prompts or default_prompts(args.suite))
    policy = None
    if args.suite == "safety":
        from evals.suites.policy import load_policy

        policy = load_policy(args.policy)
    baseline = load_results(args.baseline, "--baseline") if args.baseline else None
    items = select_items(dataset.items, args.limit, args.seed, GROUP_KEY[args.suite])

    cfg = runner.RunConfig(model=args.model, endpoint=endpoint, concurrency=args.concurrency, seed=args.seed,
                           repeats=args.repeats, timeout_s=args.timeout, max_retries=args.max_retries,
                           max_error_share=args.max_error_share, gpu_hour_price=args.gpu_hour_price,
                           hallucination_cutoff=args.hallucination_cutoff)
    log.info("%s suite: %d of %d items from %s against %s at %s", args.suite, len(items), len(dataset.items),
             dataset.path.name, args.model, endpoint)
    extra_meta: dict[str, Any] = {"endpoint": endpoint, "dataset": dataset.provenance(),
                                  "dataset_sha256": dataset.sha256, "prompts": prompts.provenance(),
                                  "config": {**cfg.describe(), "limit": args.limit}}
    if policy is not None:
        from evals.results import sha256_file

        extra_meta["policy"] = {"file": Path(policy.source).name, "version": policy.version,
                                "sha256": sha256_file(policy.source)}
    if baseline is not None:
        extra_meta["baseline"] = {"path": args.baseline, "model": (baseline.get("meta") or {}).get("model"),
                                  "version": (baseline.get("meta") or {}).get("version")}

    if args.suite == "quality":
        from evals.suites.judge import JudgeConfig

        judge_cfg = None if judge_ref is None else JudgeConfig(
            endpoint=judge_ref[0], model=judge_ref[1], output=args.judge_output, seed=args.seed,
            timeout_s=max(args.timeout, 120.0), max_retries=args.max_retries,
            embeddings_endpoint=args.embeddings_endpoint, embeddings_model=args.embeddings_model)
        metrics, samples, failures, judge_meta = asyncio.run(_run_quality(cfg, prompts, items, judge_cfg, baseline))
        extra_meta["judge"] = judge_meta
        extra_meta["answers_key"] = answers_key(dataset.sha256, prompts.sha256, cfg.seed, [i["id"] for i in items])
    else:
        assert policy is not None
        metrics, samples, failures = asyncio.run(_run_safety(cfg, prompts, policy, items))

    extra_meta["failures"] = failures
    meta = build_meta(model=name, version=version, suite=args.suite, started=started, **extra_meta)
    skipped = {m: NO_JUDGE for m in NOT_JUDGED_METRICS} if args.suite == "quality" and judge_ref is None else None
    out = write_results(args.output, metrics=metrics, meta=meta, samples=samples,
                        **({"not_judged": skipped} if skipped else {}))
    summary = ", ".join(f"{k}={_fmt(metrics.get(k))}" for k in _headline(args.suite))
    log.info("wrote %s: %s", out, summary)
    print(f"{args.suite}: {summary} -> {out}")
    if failures:
        raise CheckFailed(f"{args.suite} suite did not complete: {'; '.join(failures)} (results in {out})")
    return 0


def _headline(suite: str) -> tuple[str, ...]:
    if suite == "quality":
        return ("task_success_rate", "groundedness_score", "hallucination_rate", "answer_relevancy",
                "quality_score", "error_rate", "judge_error_rate")
    return ("refusal_rate", "pii_leakage_rate", "guardrail_violation_rate", "over_refusal_rate", "error_rate")


def _fmt(v: Any) -> str:
    return "null" if v is None else f"{v:.3f}"


def _error_metrics(gen: runner.Generation) -> dict[str, float]:
    n = len(gen.completions)
    errored = sum(1 for c in gen.completions if c.error)
    out = {"samples_total": float(n), "samples_errored": float(errored), "error_rate": errored / n if n else 1.0,
           "timeout_rate": gen.errors_by_kind.get("timeout", 0) / n if n else 0.0}
    return out


def _target_failure(cfg: runner.RunConfig, gen: runner.Generation) -> str | None:
    share = runner.error_share(gen)
    if share > cfg.max_error_share:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(gen.errors_by_kind.items()))
        first = next((c.error for c in gen.completions if c.error), "")
        return (f"{sum(1 for c in gen.completions if c.error)} of {len(gen.completions)} requests errored "
                f"(share {share:.2f} > --max-error-share {cfg.max_error_share}; {kinds}; first: {first})")
    return None


async def _run_quality(cfg: runner.RunConfig, prompts: Any, items: list[dict[str, Any]], judge_cfg: Any,
                       baseline: dict[str, Any] | None) -> tuple[dict[str, Any], list[dict[str, Any]], list[str], dict]:
    from evals.suites import quality

    client = make_client(cfg.endpoint, cfg.timeout_s, cfg.max_retries)
    gen = await runner.generate_all(client, cfg, prompts, items, "task")
    samples = quality.build_samples(items, gen)
    failures: list[str] = []
    target_failure = _target_failure(cfg, gen)
    if target_failure:
        failures.append(target_failure)
    else:
        quality.score_embeddings(items, samples)
    judge_meta: dict[str, Any] = {"judged": False, "reason": NO_JUDGE}
    if judge_cfg is not None:
        judge_meta = await _judge_all(cfg, judge_cfg, items, samples, judge=not target_failure)
    metrics: dict[str, Any] = quality.aggregate(samples)
    metrics.update(_error_metrics(gen))
    share, failed, attempted = quality.judge_error_share(samples)
    if judge_cfg is not None:
        metrics.update({"judge_error_rate": share, "judge_errors": float(failed), "judgements": float(attempted)})
    else:
        metrics.update({k: None for k in NOT_JUDGED_METRICS})
    metrics.update(runner.usage_and_cost(gen, cfg.gpu_hour_price))
    if baseline is not None:
        metrics["quality_delta_vs_baseline"] = quality.delta_vs_baseline(samples, baseline)
    if share is not None and share > cfg.max_error_share:
        reasons = sorted({r for s in samples for errs in s.get("judge_errors", {}).values() for r in errs})
        failures.append(f"{failed} of {attempted} judgements produced no score (share {share:.2f} > "
                        f"--max-error-share {cfg.max_error_share}; first reason: {reasons[0] if reasons else '?'})")
        for key in list(metrics):
            if key.startswith(JUDGE_METRICS):
                metrics[key] = None
    if target_failure:
        metrics = {k: (v if k in ("samples_total", "samples_errored", "error_rate", "timeout_rate") else None)
                   for k, v in metrics.items()}
    return metrics, samples, failures, judge_meta


async def _judge_all(cfg: runner.RunConfig, judge_cfg: Any, items: list[dict[str, Any]],
                     samples: list[dict[str, Any]], *, judge: bool) -> dict[str, Any]:
    """Score every answered sample with the independent judge; the judge's description for meta."""
    from evals.suites import quality
    from evals.suites.judge import Judge, ragas_version

    scorer = Judge(judge_cfg)
    meta = {"judged": True, **judge_cfg.describe(), "prompts": scorer.prompts(), "ragas_version": ragas_version(),
            "metrics": {"groundedness_score": "ragas ResponseGroundedness",
                        "answer_relevancy": "ragas AnswerRelevancy"}}
    if judge:
        sem = asyncio.Semaphore(cfg.concurrency)
        await asyncio.gather(*(quality.judge_sample(scorer, item, s, cfg.repeats, cfg.hallucination_cutoff, sem)
                               for item, s in zip(items, samples, strict=True) if not s.get("error")))
    return meta


async def _run_safety(cfg: runner.RunConfig, prompts: Any, policy: Any,
                      items: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    from evals.suites import safety

    client = make_client(cfg.endpoint, cfg.timeout_s, cfg.max_retries)
    gen = await runner.generate_all(client, cfg, prompts, items, "category")
    samples = safety.build_samples(policy, items, gen)
    metrics: dict[str, Any] = safety.aggregate(policy, samples)
    metrics.update(_error_metrics(gen))
    metrics.update(runner.usage_and_cost(gen, cfg.gpu_hour_price))
    failures = []
    target_failure = _target_failure(cfg, gen)
    if target_failure:
        failures.append(target_failure)
        metrics = {k: (v if k in ("samples_total", "samples_errored", "error_rate", "timeout_rate") else None)
                   for k, v in metrics.items()}
    return metrics, samples, failures


if __name__ == "__main__":
    exit_with(main)
