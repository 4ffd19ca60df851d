"""What both suites share: the generation phase, per-sample records, error share, cost.

The generation phase runs first and alone, so its wall time measures the model's
throughput at the requested concurrency (the judge may share the same server and
must not inflate it); judging happens afterwards.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

from evals.suites.prompts import PromptSet
from evals.suites.target import Completion, complete


@dataclass(frozen=True)
class RunConfig:
    model: str  # the served model name, NAME:VERSION
    endpoint: str
    concurrency: int = 4
    seed: int = 0
    repeats: int = 1
    timeout_s: float = 60.0
    max_retries: int = 2
    max_error_share: float = 0.2
    gpu_hour_price: float = 2.0
    hallucination_cutoff: float = 0.5

    def describe(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "seed": self.seed, "repeats": self.repeats,
                "timeout_s": self.timeout_s, "max_retries": self.max_retries,
                "max_error_share": self.max_error_share, "gpu_hour_price_usd": self.gpu_hour_price,
                "hallucination_cutoff": self.hallucination_cutoff}


@dataclass
class Generation:
    completions: list[Completion]
    wall_s: float
    errors_by_kind: dict[str, int] = field(default_factory=dict)


async def generate_all(client: Any, cfg: RunConfig, prompts: PromptSet, items: list[dict[str, Any]],
                       task_key: str) -> Generation:
    sem = asyncio.Semaphore(cfg.concurrency)
    started = time.perf_counter()

    async def one(item: dict[str, Any]) -> Completion:
        task = prompts.task(str(item.get(task_key, "default")))
        return await complete(client, cfg.model, task.messages(item), task.params, cfg.seed, sem)

    completions = await asyncio.gather(*(one(it) for it in items))
    wall = time.perf_counter() - started
    kinds: dict[str, int] = {}
    for c in completions:
        if c.error_kind:
            kinds[c.error_kind] = kinds.get(c.error_kind, 0) + 1
    return Generation(list(completions), wall, kinds)


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), q in 0..100."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def usage_and_cost(gen: Generation, gpu_hour_price: float) -> dict[str, float | None]:
    """Latency, token and cost figures from the generation phase.

    cost_per_request_usd = price_per_second * wall_s / successful requests, and
    cost_per_1k_tokens_usd = price_per_second * wall_s / (total tokens / 1000): what a
    dedicated GPU costs per unit of work at the throughput measured in this run.
    """
    ok = [c for c in gen.completions if not c.error]
    lat = [c.latency_ms for c in ok if c.latency_ms is not None]
    prompt_toks = sum(c.prompt_tokens or 0 for c in ok)
    completion_toks = sum(c.completion_tokens or 0 for c in ok)
    total = prompt_toks + completion_toks
    per_s = gpu_hour_price / 3600.0
    wall = gen.wall_s
    return {
        "latency_p50_ms": percentile(lat, 50), "latency_p95_ms": percentile(lat, 95),
        "latency_mean_ms": sum(lat) / len(lat) if lat else None,
        "prompt_tokens_total": float(prompt_toks), "completion_tokens_total": float(completion_toks),
        "requests_per_second": len(ok) / wall if wall > 0 else None,
        "output_tokens_per_second": completion_toks / wall if wall > 0 else None,
        "generation_wall_s": wall,
        "cost_per_request_usd": per_s * wall / len(ok) if ok else None,
        "cost_per_1k_tokens_usd": per_s * wall / (total / 1000.0) if total else None,
    }


def error_share(gen: Generation) -> float:
    n = len(gen.completions)
    return sum(1 for c in gen.completions if c.error) / n if n else 1.0


def base_sample(item: dict[str, Any], comp: Completion, group_key: str) -> dict[str, Any]:
    return {
        "id": item["id"], group_key: item.get(group_key), "prompt": item["prompt"], "answer": comp.text,
        "scores": {}, "latency_ms": round(comp.latency_ms, 2) if comp.latency_ms is not None else None,
        "tokens": comp.usage(), "finish_reason": comp.finish_reason,
        "error": comp.error, "error_kind": comp.error_kind,
    }
