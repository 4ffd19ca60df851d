"""Synthetic request-log windows with known drift, for tests, the benchmark and demos.

Why: the statistics must be shown to fire on a known shift and stay quiet without one, at
sizes a live gateway on a laptop does not produce in minutes. Rows follow
evals.requestlog.SCHEMA; the knobs are the shifts the benchmark injects (prompt length
x factor, refusal share + points, a share of traffic in a new language and topic).
Vectorised: a million rows in about a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from evals import requestlog

LANGUAGES = ("en", "de", "fr")
TOPICS = ("orders", "billing", "shipping", "returns")
PROMPT_WORDS = {
    "orders": "order status tracking number package delivered yesterday item missing",
    "billing": "invoice charge refund credit card payment twice amount wrong",
    "shipping": "shipping cost express delivery address change warehouse courier",
    "returns": "return label exchange size broken item send back policy",
    "legal": "contract clause liability jurisdiction arbitration statute indemnity lawsuit",
}


@dataclass(frozen=True)
class Shift:
    prompt_length: float = 1.0  # multiply prompt tokens
    refusal_points: float = 0.0  # add to the refusal share (0.05 = 5 points)
    new_language_share: float = 0.0  # share of rows in language "pt" and topic "legal"
    latency: float = 1.0  # multiply durations


def window(n: int, *, seed: int, shift: Shift = Shift(), start: datetime | None = None,
           with_text: bool = False, model: str = "smollm2-orders", feedback_share: float = 0.3) -> pa.Table:
    """``n`` request rows (plus feedback columns filled on a share of them) of one window."""
    rng = np.random.default_rng(seed)
    t0 = start or datetime(2026, 11, 30, 12, tzinfo=UTC)
    ts = np.sort(rng.uniform(0, 3600, n))
    topic = rng.choice(np.array(TOPICS), n)
    language = rng.choice(np.array(LANGUAGES), n, p=[0.7, 0.2, 0.1])
    new = rng.random(n) < shift.new_language_share
    topic = np.where(new, "legal", topic)
    language = np.where(new, "pt", language)
    prompt_tokens = np.maximum(1, np.round(rng.lognormal(4.0, 0.5, n) * shift.prompt_length)).astype(np.int32)
    output_tokens = np.maximum(1, np.round(rng.lognormal(3.5, 0.6, n))).astype(np.int32)
    ttft = rng.gamma(4.0, 0.05, n) * shift.latency
    duration = ttft + output_tokens * rng.gamma(9.0, 0.004, n) * shift.latency
    refusal = rng.random(n) < 0.03 + shift.refusal_points
    status = np.where(rng.random(n) < 0.01, 500, 200).astype(np.int32)
    arm = np.where(rng.random(n) < 0.1, "canary", "stable")
    has_fb = rng.random(n) < feedback_share
    score = np.where(has_fb, np.clip(rng.normal(0.8, 0.15, n) - refusal * 0.3, 0, 1), np.nan)
    hits_n = rng.poisson(0.05, n)
    first = np.where(refusal, "I'm sorry, I can't help with that.", "Your order is on its way.")
    cols: dict[str, pa.Array] = {
        "kind": pa.array(["request"] * n),
        "ts": pa.array(np.datetime64(t0.replace(tzinfo=None), "us") + (ts * 1e6).astype("timedelta64[us]"))
        .cast(requestlog.SCHEMA.field("ts").type),
        "request_id": pa.array([f"r{seed}-{i}" for i in range(n)]),
        "user_hash": pa.array([f"u{i % 997}" for i in range(n)]),
        "model": pa.array([model] * n),
        "model_version": pa.array(["1"] * n),
        "arm": pa.array(arm),
        "endpoint": pa.array(["/v1/chat/completions"] * n),
        "stream": pa.array(np.ones(n, dtype=bool)),
        "status": pa.array(status),
        "prompt_tokens": pa.array(prompt_tokens),
        "output_tokens": pa.array(output_tokens),
        "ttft_s": pa.array(ttft),
        "duration_s": pa.array(duration),
        "refusal": pa.array(refusal),
        "fallback": pa.array(rng.random(n) < 0.002),
        "guardrail_hits": pa.ListArray.from_arrays(
            pa.array(np.concatenate([[0], np.cumsum(hits_n)]).astype(np.int32)),
            pa.array(["pii"] * int(hits_n.sum()), pa.string())),
        "language": pa.array(language),
        "topic": pa.array(topic),
        "feedback_score": pa.array(score, from_pandas=True),
        "output_text": pa.array(first),
        "redacted": pa.array(np.zeros(n, dtype=bool)),
    }
    if with_text:
        cols["prompt_text"] = pa.array(prompts(topic, prompt_tokens, rng))
    arrays = [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in requestlog.SCHEMA]
    return pa.Table.from_arrays([a.cast(f.type) for a, f in zip(arrays, requestlog.SCHEMA, strict=True)],
                                schema=requestlog.SCHEMA)


def prompts(topic: np.ndarray, tokens: np.ndarray, rng: np.random.Generator) -> list[str]:
    """A short customer-service prompt per row, words drawn from the row's topic."""
    vocab = {t: w.split() for t, w in PROMPT_WORDS.items()}
    out = []
    for t, k in zip(topic.tolist(), tokens.tolist(), strict=True):
        words = vocab[t]
        n = max(3, min(40, int(k) // 4))
        out.append(" ".join(words[int(i)] for i in rng.integers(0, len(words), n)))
    return out
