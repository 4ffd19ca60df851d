"""Production traffic -> a training set and a held-out eval slice (pure, no torch).

Which rows teach: a request that succeeded (status 200, no error), whose prompt was
logged in clear (``redacted`` false), and that has a trusted answer: a ``reference``
(a person's correction, from a feedback row) or the model's own answer with positive
feedback. Which rows never teach, by the safety policy (``evals/policies/safety.yaml``):
rows the gateway's guardrails flagged, answers that are refusals (training on them
teaches over-refusal), prompts or answers with PII, answers that match a forbidden
pattern. Duplicates (the same prompt, compared case- and space-insensitively) count
once; a reference beats a liked answer, the newest wins among equals.

The split is by a hash of the prompt, so the held-out slice never shares a prompt with
the training set and the same traffic always splits the same way. The held-out slice is
written in the quality suite's schema (``evals/datasets/schema.yaml``) as a new versioned
dataset: ``python -m evals.run --suite quality --dataset eval.jsonl`` scores it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evals.suites.policy import SafetyPolicy

POSITIVE_LABELS = frozenset({"positive", "good", "up", "thumbs_up", "correct", "accepted", "helpful"})
QUALITY_TASKS = ("order_normalization", "factual", "grounded")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Pair:
    """One training pair and where it came from."""

    id: str
    prompt: str
    answer: str
    source: str  # reference | feedback
    topic: str | None
    ts: str

    def train_line(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "answer": self.answer, "source": self.source}

    def quality_item(self) -> dict[str, Any]:
        """The pair as a quality-suite item: its task from the topic, scored on the reference."""
        task = self.topic if self.topic in QUALITY_TASKS and self.topic != "grounded" else "factual"
        scorer = "exact" if task == "order_normalization" else "contains"
        return {"id": self.id, "task": task, "prompt": self.prompt, "reference": self.answer, "scorer": scorer,
                "contexts": [], "tags": ["retrain", self.source, *([self.topic] if self.topic else [])]}


@dataclass
class BuildReport:
    """What the build kept and dropped, and why (recorded with the dataset)."""

    rows: int = 0
    requests: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "requests": self.requests, "kept": self.kept, "dropped": dict(self.dropped)}


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text).strip().casefold()


def positive(row: Mapping[str, Any]) -> bool:
    """Feedback that says the answer was good: a score above 0, or a positive label."""
    score = row.get("feedback_score")
    if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score):
        return score > 0
    label = row.get("feedback_label")
    return isinstance(label, str) and label.strip().lower() in POSITIVE_LABELS


def _answer(row: Mapping[str, Any]) -> tuple[str | None, str]:
    reference = row.get("reference")
    if isinstance(reference, str) and reference.strip():
        return reference.strip(), "reference"
    output = row.get("output_text")
    if positive(row) and isinstance(output, str) and output.strip():
        return output.strip(), "feedback"
    return None, "no_trusted_answer"


def why_not(row: Mapping[str, Any], policy: SafetyPolicy) -> str | None:
    """The reason a request row may not teach, or None when it may (the order is the report's)."""
    if row.get("status") not in (200, None) or row.get("error_type"):
        return "failed_request"
    prompt = row.get("prompt_text")
    if row.get("redacted") or not isinstance(prompt, str) or not prompt.strip():
        return "prompt_not_logged"
    answer, source = _answer(row)
    if answer is None:
        return source
    if row.get("guardrail_hits"):
        return "guardrail_hit"
    if (source == "feedback" and row.get("refusal")) or policy.is_refusal(answer):
        return "refusal"
    if policy.find_pii(prompt) or policy.find_pii(answer):
        return "pii"
    forbidden = [p for rule in policy.guardrails if rule.type == "forbidden_regex" for p in rule.patterns]
    if any(p.search(answer) or p.search(prompt) for p in forbidden):
        return "forbidden_content"
    return None


def select(rows: Iterable[Mapping[str, Any]], policy: SafetyPolicy) -> tuple[list[Pair], BuildReport]:
    """Request rows (feedback merged in) -> deduplicated pairs, oldest first, and the report."""
    report = BuildReport()
    best: dict[str, tuple[int, str, Pair]] = {}
    for row in rows:
        report.rows += 1
        if row.get("kind", "request") != "request":
            continue
        report.requests += 1
        reason = why_not(row, policy)
        if reason is not None:
            report.dropped[reason] += 1
            continue
        answer, source = _answer(row)
        assert answer is not None
        ts = str(row.get("ts") or "")
        pair = Pair(id=str(row["request_id"]), prompt=str(row["prompt_text"]).strip(), answer=answer, source=source,
                    topic=row.get("topic") if isinstance(row.get("topic"), str) else None, ts=ts)
        key = normalise(pair.prompt)
        rank = 1 if source == "reference" else 0
        old = best.get(key)
        if old is not None:
            report.dropped["duplicate"] += 1
            if (old[0], old[1]) > (rank, ts):
                continue
        best[key] = (rank, ts, pair)
    pairs = sorted((p for _, _, p in best.values()), key=lambda p: (p.ts, p.id))
    report.kept = len(pairs)
    return pairs, report


def prompt_hash(prompt: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{normalise(prompt)}".encode()).hexdigest()


def split(pairs: list[Pair], eval_fraction: float, seed: int, max_examples: int | None = None
          ) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out): the newest ``max_examples`` pairs, the held-out share by prompt hash."""
    if max_examples is not None and len(pairs) > max_examples:
        pairs = pairs[-max_examples:]
    ranked = sorted(pairs, key=lambda p: prompt_hash(p.prompt, seed))
    n_eval = math.ceil(len(ranked) * eval_fraction) if eval_fraction > 0 and len(ranked) > 1 else 0
    held = {p.id for p in ranked[:n_eval]}
    return [p for p in pairs if p.id not in held], [p for p in pairs if p.id in held]


def jsonl(lines: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(dict(line), ensure_ascii=False, sort_keys=True) + "\n" for line in lines).encode()


def dataset_sha256(train: bytes, held_out: bytes) -> str:
    """One fingerprint of the training set and its eval slice (the lineage's dataset hash)."""
    h = hashlib.sha256()
    for part in (train, held_out):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()
