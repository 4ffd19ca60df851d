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
or until the sample is exhausted. The arms are compared by evals.canary_stats (error
rates, Welch's t-test and Cohen's d on quality, a minimum sample count per arm) and the
gates of the threshold file (evals.gates, the same judge as evals.gate_check).

Endpoints: flags, else TOLLGATE_STABLE_ENDPOINT / TOLLGATE_CANARY_ENDPOINT, else the
in-cluster Services named after the deployment (NAME-canary -> http://NAME-canary:8000/v1
and http://NAME:8000/v1). An arm config (``--stable-config``/``--canary-config``) is the
JSON (a file, or inline) of tollgate.registry.ServingConfig.to_dict(): the version's prompt template
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
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals import gates, settings
from evals.canary_stats import (
    CANARY,
    STABLE,
    ArmStats,
    CanaryPolicy,
    CanaryVerdict,
    Decision,
    assign_arm,
    decide,
    order_line_quality,
)
from evals.errors import EXIT_FAIL, EXIT_PASS, BadInput
from evals.results import build_meta, is_number, parse_model_ref, sha256_file, utc_now, write_results
from evals.suites import prompts

log = logging.getLogger("tollgate.canary")

DEFAULT_TRAFFIC = settings.REPO_ROOT / "evals" / "datasets" / "canary_traffic.jsonl"
DEFAULT_THRESHOLDS = settings.REPO_ROOT / "thresholds" / "canary.yaml"
SERVICE_PORT = 8000  # vLLM's default port; the in-cluster Services of infra/ listen on it
DEPLOYMENT = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")

# Which gate metric sets which policy bound (and which flag overrides it).
POLICY_METRICS = {
    "canary_quality": ("quality_min", "gte", "quality_threshold"),
    "canary_error_rate": ("error_rate_max", "lte", "error_rate_threshold"),
    "canary_error_rate_delta": ("error_rate_delta_max", "lte", "error_rate_delta_threshold"),
    "canary_min_arm_samples": ("min_samples", "gte", "min_samples"),
}

# Without an arm config, both arms get the quality suite's order-normalization prompt
# (evals/prompts/quality.yaml): the same prompt set evals.run uses, parsed by the same code.
DEFAULT_PROMPT_SET = prompts.default_prompts("quality")
PROMPT_TASK = "order_normalization"
DEFAULT_PARAMS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 24}
# Generation parameters an OpenAI-compatible server takes, and what we call them there.
OPENAI_PARAMS = {"temperature": "temperature", "max_tokens": "max_tokens", "top_p": "top_p", "seed": "seed",
                 "stop_sequences": "stop", "stop": "stop", "frequency_penalty": "frequency_penalty",
                 "presence_penalty": "presence_penalty", "top_k": "top_k"}


# An MLflow prompt template (a string or chat messages with {{prompt}}) or a task of an
# evals prompt set (system, few-shot turns, user template with {prompt}).
Template = str | list[dict[str, str]] | prompts.PromptTask


@dataclass(frozen=True)
class TrafficItem:
    user_id: str
    prompt: str
    reference: str | None


@dataclass(frozen=True)
class Arm:
    name: str
    endpoint: str  # .../v1
    model: str | None  # served model name; None: ask the endpoint's /v1/models
    template: Template
    params: dict[str, Any]


# -- inputs ----------------------------------------------------------------------------------


def load_traffic(path: str | os.PathLike[str], flag: str = "--traffic") -> list[TrafficItem]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise BadInput(f"{flag} {p}: cannot read ({exc.strerror})") from None
    items: list[TrafficItem] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{flag} {p}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise BadInput(f"{flag} {p}:{n}: each line must be an object with user_id and prompt")
        uid, prompt, ref = obj.get("user_id"), obj.get("prompt"), obj.get("reference")
        if isinstance(uid, bool) or not isinstance(uid, (str, int)) or str(uid) == "":
            raise BadInput(f"{flag} {p}:{n}: user_id must be a non-empty string or integer")
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadInput(f"{flag} {p}:{n}: prompt must be a non-empty string")
        if ref is not None and not isinstance(ref, str):
            raise BadInput(f"{flag} {p}:{n}: reference must be a string when given")
        items.append(TrafficItem(str(uid), prompt, ref))
    if not items:
        raise BadInput(f"{flag} {p}: no traffic lines")
    return items


def _endpoint(value: str, flag: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value or ""):
        raise BadInput(f"{flag} {value!r} is not an http(s) URL")
    value = value.rstrip("/")
    return value if value.endswith("/v1") else value + "/v1"


def _prompt_task(text: str, where: str) -> prompts.PromptTask:
    with tempfile.TemporaryDirectory(prefix="tollgate-canary-") as tmp:
        path = Path(tmp) / "prompts.yaml"
        path.write_text(text)
        try:
            prompt_set = prompts.load_prompts(path, flag=where)
        except BadInput as exc:
            raise BadInput(str(exc).replace(str(path), "template")) from None
    if PROMPT_TASK not in prompt_set.tasks and "default" not in prompt_set.tasks:
        raise BadInput(f"{where}: the prompt set has no {PROMPT_TASK} (or default) task")
    return prompt_set.task(PROMPT_TASK)


def _is_prompt_set(text: str) -> bool:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(doc, dict) and "tasks" in doc


def _arm_config(path: str | None, flag: str) -> tuple[str | None, Template, dict[str, Any], str | None]:
    """(served model, template, params, NAME:VERSION) from a ServingConfig JSON, or the defaults."""
    if path is None:
        task = prompts.load_prompts(DEFAULT_PROMPT_SET).task(PROMPT_TASK)
        return None, task, {**DEFAULT_PARAMS, **task.params}, None
    try:
        # Inline JSON too, so a DAG can template the config straight into the argument.
        doc = json.loads(path if path.lstrip().startswith("{") else Path(path).read_text())
    except OSError as exc:
        raise BadInput(f"{flag} {path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{flag} {path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{flag} {path}: must be a JSON object (tollgate.registry.ServingConfig.to_dict())")
    where = f"{flag} {path if not path.lstrip().startswith('{') else '(inline)'}"
    template: Template = doc.get("template") or prompts.load_prompts(DEFAULT_PROMPT_SET).task(PROMPT_TASK)
    params = doc.get("generation_params") or {}
    if not isinstance(params, dict):
        raise BadInput(f"{where}: generation_params must be an object")
    task_params: dict[str, Any] = {}
    if isinstance(template, str) and _is_prompt_set(template):
        template = _prompt_task(template, where)
    if isinstance(template, prompts.PromptTask):
        task_params = template.params
    else:
        ok = isinstance(template, str) or (isinstance(template, list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in template))
        if not ok:
            raise BadInput(f"{where}: template must be a string, chat messages or an evals prompt set")
    ref = f"{doc['model']}:{doc['version']}" if doc.get("model") and doc.get("version") else None
    served = doc.get("served_model") or ref
    if served is not None and not isinstance(served, str):
        raise BadInput(f"{where}: served_model must be a string")
    return served, template, {**DEFAULT_PARAMS, **params, **task_params}, ref


def build_policy(args: argparse.Namespace) -> tuple[CanaryPolicy, gates.ThresholdFile]:
    """Defaults <- threshold file <- flags; returns the policy and the gates with the same bounds."""
    path = args.threshold_file or (str(DEFAULT_THRESHOLDS) if DEFAULT_THRESHOLDS.is_file() else None)
    thresholds = gates.load_threshold_file(path) if path else gates.ThresholdFile(path="<built-in>", gates=())
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


# -- replay ------------------------------------------------------------------------------------


def render(template: Template, prompt: str) -> list[dict[str, str]]:
    """Chat messages for one traffic line: {{prompt}} (or {{input}}) of an MLflow template, or
    the {prompt} of an evals prompt-set task, replaced by the line."""
    if isinstance(template, prompts.PromptTask):
        return template.messages({"prompt": prompt})

    def fill(text: str) -> str:
        return re.sub(r"\{\{\s*(prompt|input)\s*\}\}", lambda _: prompt, text)
    if isinstance(template, str):
        return [{"role": "user", "content": fill(template)}]
    return [{"role": m["role"], "content": fill(m["content"])} for m in template]


def request_body(arm: Arm, model: str, prompt: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": render(arm.template, prompt)}
    for key, value in arm.params.items():
        if key in OPENAI_PARAMS and value is not None:
            body[OPENAI_PARAMS[key]] = value
    return body


def _headers() -> dict[str, str]:
    key = os.environ.get("OPENAI_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


async def _served_model(http: Any, arm: Arm) -> str | None:
    if arm.model:
        return arm.model
    try:
        resp = await http.get(arm.endpoint + "/models", headers=_headers())
        data = resp.json().get("data") or []
        return str(data[0]["id"]) if resp.status_code == 200 and data else None
    except Exception as exc:  # noqa: BLE001 - an unreachable arm is judged by its error rate
        log.warning("%s arm: cannot list models at %s (%s)", arm.name, arm.endpoint, type(exc).__name__)
        return None


async def _one(http: Any, arm: Arm, model: str | None, item: TrafficItem) -> dict[str, Any]:
    sample: dict[str, Any] = {"user_id": item.user_id, "arm": arm.name, "prompt": item.prompt,
                              "reference": item.reference, "ok": False, "status": None, "error": None,
                              "answer": None, "quality": None, "latency_ms": None}
    started = time.perf_counter()
    try:
        if model is None:
            raise LookupError("no served model")
        resp = await http.post(arm.endpoint + "/chat/completions", json=request_body(arm, model, item.prompt),
                               headers=_headers())
        sample["status"] = resp.status_code
        if resp.status_code != 200:
            sample["error"] = f"http_{resp.status_code}"
        else:
            content = resp.json()["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError("content is not a string")
            sample.update(ok=True, answer=content[:500])
            if item.reference is not None:
                sample["quality"] = order_line_quality(content, item.reference)
                # Where evals.gates looks for per-sample values (a gate with `confidence`).
                sample["scores"] = {f"{arm.name}_quality": sample["quality"]}
    except Exception as exc:  # noqa: BLE001 - every failure of the arm is an error the verdict counts
        sample["error"] = sample["error"] or type(exc).__name__
    sample["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return sample


async def replay(
    traffic: Sequence[TrafficItem], stable: Arm, canary: Arm, *, weight: float, salt: str, duration_s: float,
    concurrency: int, request_timeout_s: float,
) -> tuple[list[dict[str, Any]], float]:
    """Send each traffic line to its user's arm until the sample or the time runs out."""
    import httpx

    deadline = time.monotonic() + duration_s
    started = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=request_timeout_s, limits=limits) as http:
        models = {STABLE: await _served_model(http, stable), CANARY: await _served_model(http, canary)}
        arms = {STABLE: stable, CANARY: canary}
        queue: asyncio.Queue[TrafficItem] = asyncio.Queue()
        for item in traffic:
            queue.put_nowait(item)
        samples: list[dict[str, Any]] = []

        async def worker() -> None:
            while time.monotonic() < deadline:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                arm = assign_arm(item.user_id, weight, salt)
                samples.append(await _one(http, arms[arm], models[arm], item))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.monotonic() - started


def arm_stats(samples: Sequence[dict[str, Any]], arm: str) -> ArmStats:
    mine = [s for s in samples if s["arm"] == arm]
    return ArmStats(requests=len(mine), errors=sum(1 for s in mine if not s["ok"]),
                    quality=tuple(float(s["quality"]) for s in mine if s["ok"] and is_number(s["quality"])))


def final_verdict(verdict: CanaryVerdict, gate_verdict: gates.Verdict) -> CanaryVerdict:
    """The statistics and the gates must both say promote; any failed gate rolls back."""
    failed = [g.reason for g in gate_verdict.failed]
    if verdict.promote and failed:
        return CanaryVerdict(Decision.ROLLBACK, tuple(f"gate {r}" for r in failed), verdict.metrics)
    return verdict


# -- command line ------------------------------------------------------------------------------


def _weight(value: str) -> float:
    try:
        w = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.1 <= w <= 0.5:
        raise argparse.ArgumentTypeError(f"{value} is outside 0.1..0.5 (a canary takes a minority share)")
    return w


def _fraction(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not (math.isfinite(f) and 0.0 <= f <= 1.0):
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1]")
    return f


def _positive(kind: type) -> Any:
    def parse(value: str) -> Any:
        try:
            v = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a {kind.__name__}") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"{value} must be > 0")
        return v
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals.canary", description=__doc__.split("\n\n")[0])
    p.add_argument("--deployment", required=True, help="the canary deployment, NAME-canary")
    p.add_argument("--duration", type=_positive(float), default=900.0, help="seconds to watch (default 900)")
    p.add_argument("--quality-threshold", type=_fraction, help="minimum canary quality (gate canary_quality)")
    p.add_argument("--error-rate-threshold", type=_fraction, help="maximum canary error rate (canary_error_rate)")
    p.add_argument("--error-rate-delta-threshold", type=_fraction,
                   help="maximum canary minus stable error rate (canary_error_rate_delta)")
    p.add_argument("--min-samples", type=_positive(int), help="minimum requests per arm (canary_min_arm_samples)")
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
    p.add_argument("--canary-weight", type=_weight, default=0.3, help="share of users on the canary, 0.1..0.5")
    p.add_argument("--concurrency", type=_positive(int), default=4, help="requests in flight (default 4)")
    p.add_argument("--request-timeout", type=_positive(float), default=60.0, help="seconds per request")
    p.add_argument("--output", default="results/canary.json", help="verdict JSON (a results file)")
    p.add_argument("--report", help="also write the gate table as markdown here")
    return p


def resolve_endpoints(args: argparse.Namespace) -> tuple[str, str]:
    stable = args.stable_endpoint or os.environ.get("TOLLGATE_STABLE_ENDPOINT")
    canary = args.canary_endpoint or os.environ.get("TOLLGATE_CANARY_ENDPOINT")
    if not (stable and canary):
        if not args.deployment.endswith("-canary"):
            raise BadInput(f"--deployment {args.deployment!r}: without --stable-endpoint and --canary-endpoint "
                           "it must be NAME-canary (the Services NAME and NAME-canary are used)")
        base = args.deployment[: -len("-canary")]
        stable = stable or f"http://{base}:{SERVICE_PORT}/v1"
        canary = canary or f"http://{args.deployment}:{SERVICE_PORT}/v1"
    return (_endpoint(stable, "--stable-endpoint"), _endpoint(canary, "--canary-endpoint"))


def main(argv: Sequence[str] | None = None) -> int:
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
    s_model, s_template, s_params, s_ref = _arm_config(args.stable_config, "--stable-config")
    c_model, c_template, c_params, c_ref = _arm_config(args.canary_config, "--canary-config")
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
        model=name, version=version, suite="canary", started=started, deployment=args.deployment,
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


if __name__ == "__main__":
    from evals._cli import exit_with

    exit_with(main)
