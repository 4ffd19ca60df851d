"""Watch a live canary in Prometheus for a while and say whether it holds (exit 0) or not (exit 1).

    python -m canary.validate --deployment NAME-canary [--namespace ai-prod] --duration 900 \
        --quality-threshold 0.85 --error-rate-threshold 0.02 [--prometheus-url URL] \
        [--policy thresholds/canary-policy.yaml] [--weight 25] [--output results/canary.json]

The same analysis as the model_promotion DAG's canary steps (evals.canary.analysis, the
same PromQL): every ``analysis.interval_s`` of the policy, over the policy's window, the
canary arm of model NAME against the stable arm. ``--namespace`` is the Kubernetes
namespace (a ``namespace`` label matcher in every query); without it no namespace is
matched (the embedded default). The flags replace the matching bounds of the policy.

Exit 0 when the last analysis is Successful and no more than ``max_failed_checks`` - 1
failed; 1 when the canary failed or stayed Inconclusive (fails closed); 2 bad input.
The verdict file is a results file with the metric names of thresholds/canary.yaml, so
``python -m evals.gate_check --results FILE --threshold-file thresholds/canary.yaml``
judges it too.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Sequence

from evals import settings
from evals._cli import flag_type
from evals.canary import analysis as an
from evals.canary.policy import CanaryRolloutPolicy, load_policy
from evals.errors import EXIT_FAIL, EXIT_PASS, BadInput
from evals.results import build_meta, utc_now, write_results

log = logging.getLogger("tollgate.canary")
DEPLOYMENT = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")
NAMESPACE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

_POSITIVE_FLOAT = flag_type(settings.positive_float)
_FRACTION = flag_type(settings.fraction)
_WEIGHT = flag_type(settings.number(int, minimum=1, maximum=100))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m canary.validate", description=__doc__.split("\n\n")[0])
    p.add_argument("--deployment", required=True, help="the canary, NAME-canary (NAME is the model label)")
    p.add_argument("--namespace", help="Kubernetes namespace (a namespace label matcher), e.g. ai-prod")
    p.add_argument("--duration", type=_POSITIVE_FLOAT, default=900.0, help="seconds to watch (default 900)")
    p.add_argument("--quality-threshold", type=_FRACTION, help="minimum canary feedback quality")
    p.add_argument("--error-rate-threshold", type=_FRACTION, help="maximum canary error ratio")
    p.add_argument("--prometheus-url", help="Prometheus base URL (env TOLLGATE_PROMETHEUS_URL)")
    p.add_argument("--policy", help="canary policy YAML (default thresholds/canary-policy.yaml)")
    p.add_argument("--model", help="model label to match (default: NAME of --deployment)")
    p.add_argument("--weight", type=_WEIGHT, default=50, help="canary weight now, percent (100: no stable "
                                                               "comparison once stable is idle)")
    p.add_argument("--output", default="results/canary.json", help="verdict JSON (a results file)")
    return p


def apply_flags(policy: CanaryRolloutPolicy, args: argparse.Namespace) -> CanaryRolloutPolicy:
    checks = policy.checks
    if args.error_rate_threshold is not None:
        checks = dataclasses.replace(checks, error_ratio=dataclasses.replace(
            checks.error_ratio, absolute=args.error_rate_threshold))
    if args.quality_threshold is not None:
        checks = dataclasses.replace(checks, quality=dataclasses.replace(checks.quality, min=args.quality_threshold))
    return dataclasses.replace(policy, checks=checks)


def prometheus_url(flag: str | None) -> str:
    url = flag or getattr(settings.current(), "prometheus_url", None)
    if not url:
        port = getattr(settings.current(), "prometheus_port", None)
        url = f"http://{settings.LOOPBACK}:{port}" if port else None
    if not url or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise BadInput(f"--prometheus-url {url!r} is not an http(s) URL (or set TOLLGATE_PROMETHEUS_URL)")
    return url


def watch(policy: CanaryRolloutPolicy, query: an.QueryFn, *, model: str, weight: int, duration_s: float,
          namespace: str | None = None, clock: Callable[[], float] = time.time,
          sleep: Callable[[float], None] = time.sleep) -> tuple[an.AnalysisResult, an.Action]:
    """Analyse every interval for ``duration_s``; stop at the first abort. Returns the last result and action."""
    started = clock()
    state = an.StepState(weight=weight, started=started)
    while True:
        now = clock()
        result = an.analyse(policy, query, model=model, weight=weight, namespace=namespace,
                            window_s=an.window_for(policy, state, now))
        action = an.next_action(policy, state, result, now, hold_s=duration_s)
        log.info("analysis %d: %s (%s)", action.state.analyses, result.phase.value, "; ".join(result.reasons))
        state = action.state
        if action.kind != "wait" or now - started >= duration_s:
            return result, action
        sleep(min(policy.analysis.interval_s, max(0.0, started + duration_s - now)))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not DEPLOYMENT.fullmatch(args.deployment):
        raise BadInput(f"--deployment {args.deployment!r} is not a Kubernetes name (lower case, digits, '-')")
    if args.namespace is not None and not NAMESPACE.fullmatch(args.namespace):
        raise BadInput(f"--namespace {args.namespace!r} is not a Kubernetes namespace name")
    policy = apply_flags(load_policy(args.policy), args)
    url = prometheus_url(args.prometheus_url)
    model = args.model or args.deployment.removesuffix("-canary")
    started = utc_now()
    result, action = watch(policy, an.prometheus_query(url), model=model, weight=args.weight,
                           duration_s=args.duration, namespace=args.namespace)
    passed = result.phase is an.Phase.SUCCESSFUL and action.kind != "abort"
    meta = build_meta(model=model, version="live", suite="canary", started=started, deployment=args.deployment,
                      namespace=args.namespace, prometheus_url=url, policy=policy.path,
                      policy_sha256=policy.sha256, weight=args.weight, duration_requested_s=args.duration)
    write_results(args.output, metrics=result.metrics, meta=meta,
                  verdict={"phase": result.phase.value, "action": action.kind, "passed": passed,
                           "reasons": list(result.reasons), "analyses": action.state.analyses,
                           "checks": [dataclasses.asdict(c) for c in result.checks]})
    print(f"canary {args.deployment}{' in ' + args.namespace if args.namespace else ''}: {result.phase.value} "
          f"after {action.state.analyses} analyses ({'; '.join(result.reasons)}); verdict: {args.output}")
    return EXIT_PASS if passed else EXIT_FAIL
