"""The quality suite: deterministic task success, ragas judge metrics, text metrics.

Per-sample scores are keyed by the metric they feed (a gate reads
`samples[*].scores[<metric>]` for confidence bounds):

- task_success_rate: 1/0 by the item's deterministic scorer (scorers.task_success).
- groundedness_score: ragas ResponseGroundedness, 0..1, mean over --repeats (items with contexts).
- hallucination_rate: 1 when groundedness_score < the cutoff (default 0.5), else 0.
- answer_relevancy: ragas AnswerRelevancy, 0..1 (items that ask a question).
- token_f1, char_similarity, reference_recall: judge-free text metrics vs the reference;
  exact_match_rate: 1/0 normalized exact match with the reference, whatever the item's scorer.
- embedding_groundedness: judge-free groundedness, the cosine similarity (all-MiniLM-L6-v2,
  evals.embeddings) of the answer to its closest retrieved context (items with contexts);
  reference_similarity: the same similarity of the answer to the reference (every item).
- Judge metrics (groundedness_score, hallucination_rate, answer_relevancy) only with an
  independent judge; without one the results say "not judged" (results' ``not_judged``).
- quality_score: (task_success + reference_recall) / 2, the judge-free composite that baseline
  deltas (quality_delta_vs_baseline) are computed on, so a regression is never judge noise.
"""

from __future__ import annotations

import asyncio
from typing import Any

from evals.suites import scorers, stats
from evals.suites.judge import Judge
from evals.suites.runner import Generation, base_sample

JUDGED_RELEVANCY_TASKS = ("factual", "grounded")
TEXT_METRICS = ("token_f1", "char_similarity", "reference_recall")
EMBEDDING_METRICS = ("embedding_groundedness", "reference_similarity")


def score_deterministic(item: dict[str, Any], answer: str) -> dict[str, float]:
    success = float(scorers.task_success(item, answer))
    f1 = scorers.token_f1(answer, item["reference"])
    return {
        "task_success_rate": success,
        "exact_match_rate": float(scorers.exact_match(answer, item["reference"])),
        "token_f1": f1,
        "char_similarity": scorers.char_similarity(answer, item["reference"]),
        "reference_recall": scorers.reference_recall(answer, item["reference"]),
        "quality_score": (success + scorers.reference_recall(answer, item["reference"])) / 2.0,
    }


async def judge_sample(judge: Judge, item: dict[str, Any], sample: dict[str, Any], repeats: int,
                       cutoff: float, sem: asyncio.Semaphore) -> None:
    """Add judge scores (mean over repeats) and judge errors to one sample, in place."""
    runs: dict[str, list[Any]] = {}
    errors: dict[str, list[str]] = {}
    wanted = []
    if item.get("contexts"):
        wanted.append("groundedness_score")
    if item.get("task") in JUDGED_RELEVANCY_TASKS:
        wanted.append("answer_relevancy")
    for metric in wanted:
        for _ in range(repeats):
            async with sem:
                if metric == "groundedness_score":
                    value, err = await judge.groundedness_score(sample["answer"], list(item["contexts"]))
                else:
                    value, err = await judge.answer_relevancy(item["prompt"], sample["answer"])
            runs.setdefault(metric, []).append(value)
            if err:
                errors.setdefault(metric, []).append(err)
    sample["judge"] = {m: v for m, v in runs.items()}
    for metric, values in runs.items():
        good = [v for v in values if v is not None]
        if good:
            sample["scores"][metric] = sum(good) / len(good)
            sample["scores"][f"{metric}_repeat_std"] = stats.stdev(good)
    if "groundedness_score" in sample["scores"]:
        sample["scores"]["hallucination_rate"] = float(sample["scores"]["groundedness_score"] < cutoff)
    sample["judge_errors"] = {m: e for m, e in errors.items()
                              if m not in sample["scores"]}  # only metrics left without any number
    sample["judge_error_reasons"] = errors


def score_embeddings(items: list[dict[str, Any]], samples: list[dict[str, Any]]) -> None:
    """Add embedding_groundedness and reference_similarity to every answered sample, in place.

    One batch of embeddings for all answers, contexts and references (bounded batches
    inside evals.embeddings); similarities are clipped to 0..1 (a negative cosine is
    "unrelated", not "less than unrelated").
    """
    from evals import embeddings

    answered = [(item, s) for item, s in zip(items, samples, strict=True) if not s.get("error")]
    if not answered:
        return
    answers = embeddings.embed([s["answer"] for _, s in answered])
    refs = embeddings.embed([str(item["reference"]) for item, _ in answered])
    contexts = [list(item.get("contexts") or []) for item, _ in answered]
    flat = [c for group in contexts for c in group]
    ctx = embeddings.embed(flat) if flat else None
    start = 0
    for k, ((_, s), group) in enumerate(zip(answered, contexts, strict=True)):
        s["scores"]["reference_similarity"] = max(0.0, float(answers[k] @ refs[k]))
        if group and ctx is not None:
            sims = ctx[start:start + len(group)] @ answers[k]
            s["scores"]["embedding_groundedness"] = max(0.0, float(sims.max()))
        start += len(group)


def build_samples(items: list[dict[str, Any]], gen: Generation) -> list[dict[str, Any]]:
    samples = []
    for item, comp in zip(items, gen.completions, strict=True):
        s = base_sample(item, comp, "task")
        s["reference"] = item["reference"]
        if not comp.error:
            s["scores"].update(score_deterministic(item, comp.text))
        samples.append(s)
    return samples


def judge_error_share(samples: list[dict[str, Any]]) -> tuple[float | None, int, int]:
    """Share of (sample, metric) judgements that produced no number at all."""
    attempted = failed = 0
    for s in samples:
        if s.get("error") or "judge" not in s:
            continue
        for metric in s["judge"]:
            attempted += 1
            failed += metric in s.get("judge_errors", {})
    return (failed / attempted if attempted else None), failed, attempted


def aggregate(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    ok = [s for s in samples if not s.get("error")]
    metrics: dict[str, float | None] = {}

    def vals(key: str, subset: list[dict[str, Any]] | None = None) -> list[float]:
        return [s["scores"][key] for s in (subset if subset is not None else ok) if key in s["scores"]]

    metrics.update(stats.summarize("task_success_rate", vals("task_success_rate"), binary=True))
    metrics.update(stats.summarize("groundedness_score", vals("groundedness_score"), binary=False))
    metrics.update(stats.summarize("hallucination_rate", vals("hallucination_rate"), binary=True))
    metrics.update(stats.summarize("answer_relevancy", vals("answer_relevancy"), binary=False))
    metrics.update(stats.summarize("quality_score", vals("quality_score"), binary=False))
    metrics.update(stats.summarize("exact_match_rate", vals("exact_match_rate"), binary=True))
    metrics.update(stats.summarize("token_f1", vals("token_f1"), binary=False))
    for key in EMBEDDING_METRICS:
        metrics.update(stats.summarize(key, vals(key), binary=False))
    for key in TEXT_METRICS[1:]:
        metrics[key] = stats.mean(vals(key))
    for key in ("groundedness_score", "answer_relevancy"):
        metrics[f"{key}_repeat_std_mean"] = stats.mean(vals(f"{key}_repeat_std"))
    for task in sorted({str(s.get("task")) for s in ok}):
        metrics[f"task_success_rate_{task}"] = stats.mean(vals("task_success_rate",
                                                               [s for s in ok if s.get("task") == task]))
    return metrics


def delta_vs_baseline(samples: list[dict[str, Any]], baseline: dict[str, Any]) -> float | None:
    """Paired mean of quality_score (candidate - baseline) over ids scored in both runs.

    Paired on ids so two runs over different --limit subsets cannot fake a regression;
    falls back to the difference of the aggregate metrics when no ids are shared.
    """
    base = {s.get("id"): s.get("scores", {}).get("quality_score") for s in baseline.get("samples") or []
            if isinstance(s, dict) and not s.get("error")}
    diffs = [s["scores"]["quality_score"] - base[s["id"]] for s in samples
             if not s.get("error") and "quality_score" in s["scores"] and isinstance(base.get(s["id"]), (int, float))]
    if diffs:
        return sum(diffs) / len(diffs)
    cur = stats.mean([s["scores"]["quality_score"] for s in samples if "quality_score" in s.get("scores", {})])
    prev = (baseline.get("metrics") or {}).get("quality_score")
    return cur - prev if isinstance(prev, (int, float)) and cur is not None else None
