"""Watch a canary beside the stable model and decide: promote or roll back.

    python -m evals.canary --deployment smollm2-orders-canary --duration 900 \
        --quality-threshold 0.85 --error-rate-threshold 0.02 \
        [--threshold-file thresholds/canary.yaml] [--stable-endpoint URL] [--canary-endpoint URL] \
        [--traffic evals/datasets/canary_traffic.jsonl] [--canary-weight 0.3] [--min-samples N] \
        [--stable-config stable.json] [--canary-config canary.json] [--output results/canary.json]

A replayed traffic sample (JSONL: user_id, prompt, optional reference) is split between
the two OpenAI-compatible endpoints by a sticky hash of user_id (salted with the
deployment name) and the canary weight; each answer with a reference is scored
(normalized exact match, token-F1 partial credit). The run lasts ``--duration`` seconds
or until the sample is exhausted. The arms are compared by evals.canary.stats (error
rates, Welch's t-test and Cohen's d on quality, a minimum sample count per arm) and the
gates of the threshold file (evals.gates, the same judge as evals.gate_check).

Endpoints: flags, else TOLLGATE_STABLE_ENDPOINT / TOLLGATE_CANARY_ENDPOINT, else the
in-cluster Services named after the deployment (NAME-canary -> http://NAME-canary:8000/v1
and http://NAME:8000/v1). An arm config (``--stable-config``/``--canary-config``) is the
JSON (a file, or inline) of tollgate.mlflow.registry.ServingConfig.to_dict(): the version's prompt template
(an MLflow template where {{prompt}} is the traffic line, or an evals prompt set whose
order_normalization task is used) and generation parameters, so v1 and v2 of the same
weights are compared with their own prompts. Without one, an arm gets the quality
suite's order-normalization prompt (evals/prompts/quality.yaml).

Bounds: built-in defaults, then the threshold file (thresholds/canary.yaml unless given),
then the flags. Exit 0 promote, 1 roll back (a broken bound, or too little evidence:
inconclusive fails closed), 2 bad input. The verdict file is a results file (metrics,
samples, meta) plus a ``verdict`` section; ``python -m evals.gate_check --results
verdict.json --threshold-file thresholds/canary.yaml`` judges it the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

from evals import gates, settings
from evals._cli import flag_type
from evals.canary.stats import CANARY, STABLE, CanaryPolicy, CanaryVerdict, Decision, decide
from evals.canary.traffic import DEFAULT_TRAFFIC, Arm, arm_config, arm_stats, load_traffic, replay
from evals.errors import EXIT_FAIL, EXIT_PASS, BadInput
from evals.results import build_meta, parse_model_ref, sha256_file, utc_now, write_results

log = logging.getLogger("tollgate.canary")

DEFAULT_THRESHOLDS = settings.REPO_ROOT / "thresholds" / "canary.yaml"
SUITE = "canary"  # meta.suite of the verdict file; evals.catalogue.CANARY lists its metric names
SERVICE_PORT = 8000  # vLLM's default port; the in-cluster Services of infra/ listen on it
DEPLOYMENT = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")

# Which gate metric sets which policy bound (and which flag overrides it).
POLICY_METRICS = {
    "canary_quality": ("quality_min", "gte", "quality_threshold"),
    "canary_error_rate": ("error_rate_max", "lte", "error_rate_threshold"),
    "canary_error_rate_delta": ("error_rate_delta_max", "lte", "error_rate_delta_threshold"),
    "canary_min_arm_samples": ("min_samples", "gte", "min_samples"),
}


# -- policy and verdict ------------------------------------------------------------------------


def build_policy(args: argparse.Namespace) -> tuple[CanaryPolicy, gates.ThresholdFile]:
    """Defaults <- threshold file <- flags; returns the policy and the gates with the same bounds."""
    path = args.threshold_file or (str(DEFAULT_THRESHOLDS) if DEFAULT_THRESHOLDS.is_file() else None)
    thresholds = gates.load_threshold_file(path) if path else gates.ThresholdFile(path="<built-in>", gates=())
    gates.check_metrics(thresholds, SUITE)  # a gate on a name no canary writes is a typo: exit 2, no request sent
    bounds: dict[str, float] = {}
    for g in thresholds.gates:
        if g.metric in POLICY_METRICS:
            field_name, comparison, _ = POLICY_METRICS[g.metric]
            if gates.COMPARISONS[g.comparison][0] != gates.COMPARISONS[comparison][0]:
                raise BadInput(f"{path}: gates.{g.name}: {g.metric} takes {gates.COMPARISONS[comparison][0]}")
            bounds[field_name] = g.bound
    for field_name, _, flag_attr in POLICY_METRICS.values():
        value = getattr(args, flag_attr)
        if value is not None:
            bounds[field_name] = value
    if "min_samples" in bounds:
        bounds["min_samples"] = int(math.ceil(bounds["min_samples"]))
    try:
        policy = CanaryPolicy(**bounds, alpha=args.alpha, min_effect_size=args.min_effect_size)  # type: ignore[arg-type]
    except ValueError as exc:
        raise BadInput(f"canary bounds: {exc}") from None
    # The gates carry the effective bounds, so the verdict file and the decision agree.
    effective = {m: float(getattr(policy, f)) for m, (f, _, _) in POLICY_METRICS.items()}
    new_gates = []
    seen = set()
    for g in thresholds.gates:
        if g.metric in effective:
            g = dataclasses.replace(g, bound=effective[g.metric])
            seen.add(g.metric)
        new_gates.append(g)
    for metric, (_, comparison, _) in POLICY_METRICS.items():
        if metric not in seen:
            new_gates.append(gates.Gate(name=metric, metric=metric, bound=effective[metric], comparison=comparison))
    return policy, dataclasses.replace(thresholds, gates=tuple(new_gates))


def final_verdict(verdict: CanaryVerdict, gate_verdict: gates.Verdict) -> CanaryVerdict:
    """The statistics and the gates must both say promote; any failed gate rolls back."""
    failed = [g.reason for g in gate_verdict.failed]
    if verdict.promote and failed:
        return CanaryVerdict(Decision.ROLLBACK, tuple(f"gate {r}" for r in failed), verdict.metrics)
    return verdict


# -- command line ------------------------------------------------------------------------------


_POSITIVE_INT = flag_type(settings.positive_int)
_POSITIVE_FLOAT = flag_type(settings.positive_float)
_FRACTION = flag_type(settings.fraction)
_CANARY_WEIGHT = flag_type(settings.number(float, minimum=0.1, maximum=0.5))  # a canary takes a minority share


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals.canary", description=__doc__.split("\n\n")[0])
    p.add_argument("--deployment", required=True, help="the canary deployment, NAME-canary")
    p.add_argument("--namespace", help="Kubernetes namespace of the Services (NAME.NAMESPACE.svc.cluster.local)")
    p.add_argument("--duration", type=_POSITIVE_FLOAT, default=900.0, help="seconds to watch (default 900)")
    p.add_argument("--quality-threshold", type=_FRACTION, help="minimum canary quality (gate canary_quality)")
    p.add_argument("--error-rate-threshold", type=_FRACTION, help="maximum canary error rate (canary_error_rate)")
    p.add_argument("--error-rate-delta-threshold", type=_FRACTION,
                   help="maximum canary minus stable error rate (canary_error_rate_delta)")
    p.add_argument("--min-samples", type=_POSITIVE_INT, help="minimum requests per arm (canary_min_arm_samples)")
    p.add_argument("--threshold-file", help="gate YAML (default thresholds/canary.yaml)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of Welch's t-test")
    p.add_argument("--min-effect-size", type=float, default=0.2, help="smallest |Cohen's d| that counts")
    p.add_argument("--stable-endpoint", help="OpenAI-compatible URL of the stable model (env TOLLGATE_STABLE_ENDPOINT)")
    p.add_argument("--canary-endpoint", help="OpenAI-compatible URL of the canary (env TOLLGATE_CANARY_ENDPOINT)")
    p.add_argument("--stable-config", help="ServingConfig JSON (file or inline) of the stable version: prompt, "
                                           "parameters")
    p.add_argument("--canary-config", help="ServingConfig JSON (file or inline) of the candidate version")
    p.add_argument("--model", help="the candidate, NAME:VERSION, for the verdict's meta")
    p.add_argument("--traffic", default=str(DEFAULT_TRAFFIC), help="traffic sample JSONL: user_id, prompt, reference")
    p.add_argument("--canary-weight", type=_CANARY_WEIGHT, default=0.3, help="share of users on the canary, 0.1..0.5")
    p.add_argument("--concurrency", type=_POSITIVE_INT, default=4, help="requests in flight (default 4)")
    p.add_argument("--request-timeout", type=_POSITIVE_FLOAT, default=60.0, help="seconds per request")
    p.add_argument("--output", default="results/canary.json", help="verdict JSON (a results file)")
    p.add_argument("--report", help="also write the gate table as markdown here")
    return p


def _endpoint(value: str, flag: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value or ""):
        raise BadInput(f"{flag} {value!r} is not an http(s) URL")
    value = value.rstrip("/")
    return value if value.endswith("/v1") else value + "/v1"


def resolve_endpoints(args: argparse.Namespace) -> tuple[str, str]:
    env = settings.current()
    stable = args.stable_endpoint or env.stable_endpoint
    canary = args.canary_endpoint or env.canary_endpoint
    if not (stable and canary):
        if not args.deployment.endswith("-canary"):
            raise BadInput(f"--deployment {args.deployment!r}: without --stable-endpoint and --canary-endpoint "
                           "it must be NAME-canary (the Services NAME and NAME-canary are used)")
        base = args.deployment[: -len("-canary")]
        ns = getattr(args, "namespace", None)
        if ns is not None and not DEPLOYMENT.fullmatch(ns):
            raise BadInput(f"--namespace {ns!r} is not a Kubernetes namespace name")
        domain = f".{ns}.svc.cluster.local" if ns else ""
        stable = stable or f"http://{base}{domain}:{SERVICE_PORT}/v1"
        canary = canary or f"http://{args.deployment}{domain}:{SERVICE_PORT}/v1"
    return (_endpoint(stable, "--stable-endpoint"), _endpoint(canary, "--canary-endpoint"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evals.canary``: replay the traffic, judge both arms, write the verdict."""
    args = build_parser().parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the verdict
    # Every input is read and validated before the first request: bad input has no side effects.
    if not DEPLOYMENT.fullmatch(args.deployment):
        raise BadInput(f"--deployment {args.deployment!r} is not a Kubernetes name (lower case, digits, '-')")
    if not 0.0 < args.alpha < 1.0:
        raise BadInput(f"--alpha {args.alpha} must be in (0, 1)")
    if not (args.min_effect_size >= 0 and math.isfinite(args.min_effect_size)):
        raise BadInput(f"--min-effect-size {args.min_effect_size} must be >= 0")
    policy, thresholds = build_policy(args)
    stable_url, canary_url = resolve_endpoints(args)
    traffic = load_traffic(args.traffic)
    s_model, s_template, s_params, s_ref = arm_config(args.stable_config, "--stable-config")
    c_model, c_template, c_params, c_ref = arm_config(args.canary_config, "--canary-config")
    candidate = args.model or c_ref
    if candidate:
        name, version = parse_model_ref(candidate, "--model")
    else:
        name, version = args.deployment.removesuffix("-canary"), "unknown"
    stable = Arm(STABLE, stable_url, s_model, s_template, s_params)
    canary = Arm(CANARY, canary_url, c_model, c_template, c_params)

    started = utc_now()
    log.info("canary %s: %d traffic lines, weight %.2f, up to %.0f s; stable %s, canary %s", args.deployment,
             len(traffic), args.canary_weight, args.duration, stable_url, canary_url)
    samples, elapsed = asyncio.run(replay(traffic, stable, canary, weight=args.canary_weight, salt=args.deployment,
                                          duration_s=args.duration, concurrency=args.concurrency,
                                          request_timeout_s=args.request_timeout))
    stats = decide(arm_stats(samples, STABLE), arm_stats(samples, CANARY), policy)
    metrics = dict(stats.metrics)
    gate_verdict = gates.evaluate(thresholds, {"metrics": metrics, "samples": samples})
    verdict = final_verdict(stats, gate_verdict)

    meta = build_meta(
        model=name, version=version, suite=SUITE, started=started, deployment=args.deployment,
        stable_endpoint=stable_url, canary_endpoint=canary_url, stable_model=s_ref, canary_model=c_ref,
        canary_weight=args.canary_weight, duration_requested_s=args.duration, duration_s=round(elapsed, 2),
        traffic=str(args.traffic), traffic_lines=len(traffic), requests_sent=len(samples),
        dataset_sha256=sha256_file(args.traffic),
        thresholds_sha256=sha256_file(thresholds.path) if Path(thresholds.path).is_file() else None,
        threshold_file=thresholds.path,
    )
    section = {"decision": verdict.decision.value, "action": verdict.action, "promote": verdict.promote,
               "reasons": list(verdict.reasons), "policy": dataclasses.asdict(policy),
               "gates": [g.to_dict() for g in gate_verdict.gates]}
    write_results(args.output, metrics=metrics, meta=meta, samples=samples, verdict=section)
    if args.report:
        report = gates.markdown_report(gate_verdict, f"canary {args.deployment}")
        report += "\n\n**Decision: " + verdict.decision.value.upper() + "** - " + "; ".join(verdict.reasons) + "\n"
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(report)
    print(f"canary {args.deployment}: {verdict.decision.value.upper()} -> {verdict.action} "
          f"(stable {int(metrics['stable_requests'])} req, canary {int(metrics['canary_requests'])} req; "
          f"{'; '.join(verdict.reasons)}); verdict: {args.output}")
    return EXIT_PASS if verdict.promote else EXIT_FAIL
