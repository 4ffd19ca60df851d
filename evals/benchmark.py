"""Latency benchmark of an OpenAI-compatible endpoint: `python -m evals.benchmark`.

    python -m evals.benchmark --model NAME:VERSION --concurrent-users 50 --duration 300 \\
        --output results/latency.json
    python -m evals.benchmark --model NAME:VERSION --request-rate 20 --max-concurrency 64 \\
        --duration 120 --slo-ttft-ms 500 --slo-tpot-ms 100 --output results/latency.json

Closed loop (``--concurrent-users``) or open loop (``--request-rate``, Poisson
arrivals, optional ``--max-concurrency``). Streaming requests with
``stream_options.include_usage``; a warm-up is run first and excluded. Writes the
results JSON (metrics named for thresholds/latency.yaml, per-request samples,
error reasons) and a PNG of the TTFT and E2E latency CDFs beside it.

Exit codes: 0 results written; 1 results written but no request succeeded;
2 bad input (flags, prompts file, unreachable endpoint, model not served).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evals import inputs, settings
from evals._cli import flag_type
from evals.errors import BadInput, CheckFailed
from evals.loadgen import (
    SLO,
    BenchmarkMetrics,
    ClosedLoop,
    Endpoint,
    LoadShape,
    OpenLoop,
    RunConfig,
    build_post,
    compute_metrics,
    run_load,
    write_cdf_png,
)
from evals.results import build_meta, parse_model_ref, sha256_file, utc_now, write_results

log = logging.getLogger("tollgate.benchmark")

PREFLIGHT_TIMEOUT_S = 8.0  # unreachable endpoints must fail within 10 s

# Short order-line prompts in the style of the production task; used when --prompts is not given.
DEFAULT_PROMPTS = (
    "Normalize this order line: lgr pep pzza x2",
    "Normalize this order line: sm marg pizza",
    "Normalize this order line: 3 garlic brd",
    "Normalize this order line: med hawaiian pz x1",
    "Normalize this order line: 2 coke zero 500ml",
    "Normalize this order line: xl veggie supreme",
    "Normalize this order line: chkn wings 12pc bbq",
    "Normalize this order line: caesar sld no croutons",
)

DEFINITIONS = {
    "latency": "end to end: request sent -> response complete, successful requests, ms",
    "ttft": "request sent -> first SSE chunk carrying generated text, ms",
    "tpot": "(E2E - TTFT) / (output_tokens - 1), requests with >= 2 tokens, ms",
    "itl": "gap between consecutive token chunks, pooled over requests, ms",
    "client_queue": "scheduled -> sent (waiting for a concurrency slot or for the client), ms",
    "requests_per_second": "successful measured requests / elapsed (window start -> last measured end)",
    "goodput_rps": "successful requests meeting every SLO given / elapsed; all successes when no SLO",
    "error_rate": "requests that did not succeed (errors and timeouts) / measured requests",
    "timeout_rate": "requests that timed out / measured requests (included in error_rate)",
    "delivered_rate_rps": "requests actually sent in the window / duration (vs requested_rate_rps)",
    "requests_unsent": "open loop: arrivals still waiting for a --max-concurrency slot when the window ended",
    "delivered_concurrency_mean": "sum of request latencies / elapsed (vs requested_concurrency)",
}


_POSITIVE_INT = flag_type(settings.positive_int)
_POSITIVE_FLOAT = flag_type(settings.positive_float)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals.benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="NAME:VERSION; must be a model the endpoint serves")
    p.add_argument("--output", required=True, help="results JSON path; the CDF PNG goes beside it")
    p.add_argument("--endpoint", help="OpenAI-compatible base URL (default: $TOLLGATE_ENDPOINT, "
                                      "$OPENAI_BASE_URL, else the embedded vLLM)")
    load = p.add_argument_group("load shape")
    load.add_argument("--concurrent-users", type=_POSITIVE_INT,
                      help="closed loop: this many users, each sending as soon as its last request ends "
                           "(default 8 when --request-rate is not given)")
    load.add_argument("--request-rate", type=_POSITIVE_FLOAT,
                      help="open loop: Poisson arrivals at this many requests/s")
    load.add_argument("--max-concurrency", type=_POSITIVE_INT,
                      help="open loop: at most this many requests in flight; later arrivals queue in the client")
    load.add_argument("--duration", type=_POSITIVE_FLOAT, default=60.0,
                      help="measured seconds (default 60)")
    load.add_argument("--warmup", type=float, default=None,
                      help="seconds of load before measuring, excluded (default: 10%% of --duration, at most 10)")
    load.add_argument("--seed", type=int, default=0, help="seed of the Poisson arrivals")
    req = p.add_argument_group("requests")
    req.add_argument("--api", choices=("chat", "completions"), default="chat",
                     help="/v1/chat/completions (default) or /v1/completions")
    req.add_argument("--max-tokens", type=_POSITIVE_INT, default=64)
    req.add_argument("--ignore-eos", action="store_true", help="ask vLLM to generate exactly --max-tokens")
    req.add_argument("--prompts", help="JSONL file, one object per line with 'prompt' (string) or 'messages'")
    req.add_argument("--request-timeout", type=_POSITIVE_FLOAT, default=60.0,
                     help="seconds per request, connect to last byte (default 60)")
    req.add_argument("--api-key", default=None, help="bearer token (default: $OPENAI_API_KEY if set)")
    slo = p.add_argument_group("SLOs for goodput (per request)")
    slo.add_argument("--slo-ttft-ms", type=_POSITIVE_FLOAT)
    slo.add_argument("--slo-tpot-ms", type=_POSITIVE_FLOAT)
    slo.add_argument("--slo-latency-ms", type=_POSITIVE_FLOAT, help="end-to-end latency")
    p.add_argument("--no-samples", action="store_true", help="leave per-request samples out of the JSON")
    return p


# -- inputs ------------------------------------------------------------------------------


def resolve_endpoint(flag_value: str | None) -> Endpoint:
    for source, value in (("--endpoint", flag_value), ("TOLLGATE_ENDPOINT", settings.current().endpoint),
                          ("OPENAI_BASE_URL", os.environ.get("OPENAI_BASE_URL"))):
        if value:
            return Endpoint.parse(value, source)
    return Endpoint.parse(f"http://{settings.LOOPBACK}:{settings.current().vllm_port}/v1")


def load_prompts(path: str | None) -> list[dict[str, Any]]:
    """Prompts as request fragments ({'prompt': ...} or {'messages': [...]}); bad lines are bad input."""
    if path is None:
        return [{"prompt": p} for p in DEFAULT_PROMPTS]
    p = Path(path)
    out: list[dict[str, Any]] = []
    for lineno, obj in inputs.json_lines(p, "--prompts", "an object with 'prompt' or 'messages'"):
        if isinstance(obj.get("prompt"), str) and obj["prompt"].strip():
            out.append({"prompt": obj["prompt"]})
        elif isinstance(obj.get("messages"), list) and obj["messages"] and all(
                isinstance(m, dict) and isinstance(m.get("content"), str) for m in obj["messages"]):
            out.append({"messages": obj["messages"]})
        else:
            raise BadInput(f"--prompts {p} line {lineno}: needs a non-empty 'prompt' string or 'messages' list")
    if not out:
        raise BadInput(f"--prompts {p}: no prompts (file is empty)")
    return out


def build_payloads(endpoint: Endpoint, model: str, prompts: list[dict[str, Any]], api: str, max_tokens: int,
                   ignore_eos: bool, api_key: str | None) -> list[bytes]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    payloads = []
    for item in prompts:
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
                                "stream_options": {"include_usage": True}}
        if ignore_eos:
            body["ignore_eos"] = True
        if api == "chat":
            body["messages"] = item.get("messages") or [{"role": "user", "content": item["prompt"]}]
            path = "/chat/completions"
        else:
            body["prompt"] = item.get("prompt") or "\n".join(m["content"] for m in item["messages"])
            path = "/completions"
        payloads.append(build_post(endpoint, path, json.dumps(body).encode(), headers))
    return payloads


def preflight(endpoint: Endpoint, model: str, api_key: str | None) -> list[str]:
    """GET /models: an unreachable endpoint or a model it does not serve is bad input (exit 2)."""
    import httpx

    url = endpoint.url + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = httpx.get(url, headers=headers, timeout=httpx.Timeout(PREFLIGHT_TIMEOUT_S, connect=5.0))
    except httpx.ConnectTimeout:
        raise BadInput(f"endpoint {endpoint.url} unreachable: connect timed out") from None
    except httpx.TimeoutException:
        raise BadInput(f"endpoint {endpoint.url} unreachable: no answer to GET /models within "
                       f"{PREFLIGHT_TIMEOUT_S:.0f} s") from None
    except httpx.HTTPError as exc:
        reason = str(exc).split("] ")[-1] or type(exc).__name__
        raise BadInput(f"endpoint {endpoint.url} unreachable: {reason}") from None
    if resp.status_code != 200:
        raise BadInput(f"endpoint {endpoint.url}: GET /models answered HTTP {resp.status_code}; "
                       "is it an OpenAI-compatible server?")
    try:
        served = [m["id"] for m in resp.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise BadInput(f"endpoint {endpoint.url}: GET /models did not return an OpenAI model list") from None
    if model not in served:
        raise BadInput(f"model {model!r} is not served by {endpoint.url}; served: {', '.join(served) or 'none'}")
    return served


def choose_shape(args: argparse.Namespace) -> LoadShape:
    if args.request_rate is not None:
        if args.concurrent_users is not None:
            raise BadInput("--concurrent-users (closed loop) and --request-rate (open loop) exclude each other")
        return OpenLoop(rate=args.request_rate, max_concurrency=args.max_concurrency, seed=args.seed)
    if args.max_concurrency is not None:
        raise BadInput("--max-concurrency applies to the open loop only; give --request-rate too")
    return ClosedLoop(users=args.concurrent_users or 8)


# -- output ------------------------------------------------------------------------------


def cdf_path_for(output: Path) -> Path:
    return output.with_name(output.stem + "_cdf.png")


def summary_lines(m: BenchmarkMetrics) -> list[str]:
    def f(v: float | None, unit: str = "") -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.1f}{unit}"

    lines = [
        f"requests: {m.requests_measured} measured, {m.requests_ok} ok, {m.requests_failed} errors, "
        f"{m.requests_timed_out} timeouts ({m.warmup_requests} warm-up excluded), elapsed {m.elapsed_s:.1f} s",
        f"{'':14}{'p50':>10}{'p95':>10}{'p99':>10}",
    ]
    for name, table in (("latency ms", m.latency_ms), ("ttft ms", m.ttft_ms), ("tpot ms", m.tpot_ms),
                        ("itl ms", m.itl_ms), ("queue ms", m.client_queue_ms)):
        lines.append(f"{name:14}" + "".join(f"{f(table[q]):>10}" for q in (50, 95, 99)))
    lines.append(f"throughput: {f(m.requests_per_second)} req/s, {f(m.output_tokens_per_second)} output tok/s, "
                 f"goodput {f(m.goodput_rps)} req/s")
    if m.requested_rate_rps is not None:
        unsent = f", {m.requests_unsent} arrivals unsent at the end" if m.requests_unsent else ""
        lines.append(f"load: requested {f(m.requested_rate_rps)} req/s, delivered {f(m.delivered_rate_rps)} req/s"
                     f"{unsent}")
    else:
        lines.append(f"load: requested {f(m.requested_concurrency)} users, delivered mean concurrency "
                     f"{f(m.delivered_concurrency_mean)}")
    for reason, count in m.errors_by_reason.items():
        lines.append(f"failed: {count} x {reason}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    name, version = parse_model_ref(args.model)
    model = args.model
    shape = choose_shape(args)
    warmup = args.warmup if args.warmup is not None else min(10.0, args.duration * 0.1)
    if not (warmup >= 0 and math.isfinite(warmup)):
        raise BadInput(f"--warmup must be >= 0 seconds, got {args.warmup!r}")
    endpoint = resolve_endpoint(args.endpoint)
    prompts = load_prompts(args.prompts)
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY") or None
    slo = SLO(ttft_ms=args.slo_ttft_ms, tpot_ms=args.slo_tpot_ms, latency_ms=args.slo_latency_ms)
    output = Path(args.output)

    preflight(endpoint, model, api_key)
    payloads = build_payloads(endpoint, model, prompts, args.api, args.max_tokens, args.ignore_eos, api_key)
    started = utc_now()
    log.info("benchmark %s at %s: %s, %g s warm-up + %g s measured", model, endpoint.url,
             shape.label(), warmup, args.duration)
    result = run_load(RunConfig(endpoint=endpoint, payloads=payloads, shape=shape, duration_s=args.duration,
                                warmup_s=warmup, request_timeout_s=args.request_timeout))
    metrics = compute_metrics(result, slo)

    cdf = write_cdf_png(cdf_path_for(output), result.measured, f"{model} at {endpoint.url}: {shape.label()}")
    config = {
        "load": shape.describe(),
        "duration_s": args.duration,
        "warmup_s": warmup,
        "api": args.api,
        "max_tokens": args.max_tokens,
        "ignore_eos": args.ignore_eos,
        "request_timeout_s": args.request_timeout,
        "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms, "latency_ms": slo.latency_ms},
        "prompts": args.prompts or "built-in",
        "prompts_count": len(prompts),
    }
    meta = build_meta(model=name, version=version, suite="latency", started=started, endpoint=endpoint.url,
                      tool="evals.benchmark", config=config, cdf_png=cdf.name,
                      prompts_sha256=sha256_file(args.prompts) if args.prompts else None)
    samples = None if args.no_samples else [r.as_sample(result.t0) for r in result.records]
    write_results(output, metrics=metrics.as_metrics(), meta=meta, samples=samples,
                  errors=metrics.errors_by_reason, definitions=DEFINITIONS)
    for line in summary_lines(metrics):
        print(line)
    print(f"results: {output} (CDF: {cdf})")
    if metrics.requests_ok == 0:
        raise CheckFailed(f"no measured request succeeded ({metrics.requests_measured} measured; "
                          f"{', '.join(f'{c} x {r}' for r, c in metrics.errors_by_reason.items()) or 'none sent'})")
    return 0


if __name__ == "__main__":
    from evals._cli import exit_with

    exit_with(main)
