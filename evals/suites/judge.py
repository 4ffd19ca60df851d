"""LLM-as-judge metrics through ragas 0.4 (`ragas.metrics.collections`).

- groundedness: `ResponseGroundedness` (two judge prompts, each rating 0/1/2 how well
  the answer is supported by the retrieved contexts; averaged and scaled to 0..1).
- answer relevancy: `AnswerRelevancy` (the judge writes the question the answer
  responds to; cosine similarity to the real question; 0 if the answer is evasive).

The judge is `llm_factory(model, client=AsyncOpenAI(base_url=judge endpoint))` with
temperature 0 and a fixed seed. Small judges (the embedded SmolLM2) rarely write valid
JSON by themselves, so by default the judge's output is *constrained* to the response
schema (`--judge-output json_schema`: OpenAI `response_format=json_schema`, which vLLM
enforces with guided decoding). `json` keeps ragas' default JSON mode for providers
without schema support.

A judge answer that cannot be parsed (or a judge call that fails) is recorded as a
per-sample error with its reason; it is never a crash and never a silent zero.
"""

from __future__ import annotations

import contextvars
import hashlib
import math
import os
import re
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")  # before any ragas import: no telemetry posts

JUDGE_OUTPUT_MODES = ("json_schema", "json")
_failures: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("judge_failures", default=None)


@dataclass(frozen=True)
class JudgeConfig:
    endpoint: str
    model: str
    output: str = "json_schema"
    seed: int = 0
    max_tokens: int = 256
    timeout_s: float = 120.0
    max_retries: int = 2
    relevancy_strictness: int = 1
    embeddings_endpoint: str | None = None
    embeddings_model: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "model": self.model, "output": self.output, "temperature": 0.0,
                "seed": self.seed, "max_tokens": self.max_tokens,
                "relevancy_strictness": self.relevancy_strictness,
                "embeddings": ({"endpoint": self.embeddings_endpoint, "model": self.embeddings_model}
                               if self.embeddings_model else {"kind": "hashing", "dims": HashingEmbeddings.DIMS})}


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:240]}"


def _make_hashing_embeddings() -> Any:
    from ragas.embeddings.base import BaseRagasEmbedding

    class _Hashing(BaseRagasEmbedding):
        """Deterministic, offline bag of word unigrams + character trigrams, hashed.

        Answer relevancy compares the judge's reconstructed question with the real one;
        with no embedding model reachable offline, lexical overlap is the stand-in.
        `--embeddings-endpoint/--embeddings-model` swaps in a real embedding model.
        """

        DIMS = HashingEmbeddings.DIMS

        def embed_text(self, text: str, **kwargs: Any) -> list[float]:
            return hashing_vector(text, self.DIMS)

        async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
            return hashing_vector(text, self.DIMS)

    return _Hashing()


class HashingEmbeddings:
    DIMS = 512


def hashing_vector(text: str, dims: int = HashingEmbeddings.DIMS) -> list[float]:
    vec = [0.0] * dims
    words = re.findall(r"\w+", (text or "").lower())
    feats = words + [f"#{w[i:i + 3]}" for w in words for i in range(max(1, len(w) - 2))]
    for f in feats:
        h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "big")
        vec[h % dims] += 1.0 if (h >> 63) == 0 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


class Judge:
    """Scores samples with ragas metrics; one instance per run."""

    def __init__(self, config: JudgeConfig) -> None:
        import instructor
        from ragas.llms import llm_factory
        from ragas.llms.base import InstructorBaseRagasLLM
        from ragas.metrics.collections import AnswerRelevancy, ResponseGroundedness

        from evals.suites.target import judge_api_key, make_client

        self.config = config
        client = make_client(config.endpoint, config.timeout_s, config.max_retries, key=judge_api_key())
        llm = llm_factory(config.model, client=client, temperature=0.0, top_p=1.0, seed=config.seed,
                          max_tokens=config.max_tokens)
        if config.output == "json_schema":
            # ragas patches OpenAI clients in instructor's JSON mode (a free-form JSON object);
            # JSON_SCHEMA mode sends the response model's schema so the server constrains output.
            llm.client = instructor.from_openai(client, mode=instructor.Mode.JSON_SCHEMA)  # type: ignore[attr-defined]

        class _Recording(InstructorBaseRagasLLM):
            """Delegates to the ragas LLM and remembers why a call failed: ragas' metrics
            turn failures into NaN (groundedness) or exceptions (relevancy) without a reason."""

            def generate(self, prompt: str, response_model: Any) -> Any:  # pragma: no cover - async only
                return llm.generate(prompt, response_model)

            async def agenerate(self, prompt: str, response_model: Any) -> Any:
                try:
                    return await llm.agenerate(prompt, response_model)
                except Exception as exc:
                    bucket = _failures.get()
                    if bucket is not None:
                        bucket.append(_one_line(exc))
                    raise

        recording = _Recording()
        # max_retries=1: repeats are ours (--repeats), so a failure is seen, not retried away.
        self.groundedness = ResponseGroundedness(llm=recording, max_retries=1)
        if config.embeddings_model and config.embeddings_endpoint:
            from ragas.embeddings.base import embedding_factory

            embeddings = embedding_factory("openai", model=config.embeddings_model,
                                           client=make_client(config.embeddings_endpoint, config.timeout_s,
                                                              config.max_retries), interface="modern")
        else:
            embeddings = _make_hashing_embeddings()
        self.relevancy = AnswerRelevancy(llm=recording, embeddings=embeddings,  # type: ignore[arg-type]
                                         strictness=config.relevancy_strictness)

    def prompts(self) -> dict[str, str]:
        """The judge instructions, for the results meta."""
        return {
            "groundedness_judge1": self.groundedness.judge1_prompt.instruction,
            "groundedness_judge2": self.groundedness.judge2_prompt.instruction,
            "answer_relevancy": self.relevancy.prompt.instruction,
        }

    async def _score(self, metric: Any, **kwargs: Any) -> tuple[float | None, str | None]:
        bucket: list[str] = []
        token = _failures.set(bucket)
        try:
            result = await metric.ascore(**kwargs)
            value = result.value
        except Exception as exc:  # noqa: BLE001 - a failed judgement is a per-sample error
            return None, bucket[-1] if bucket else _one_line(exc)
        finally:
            _failures.reset(token)
        if value is None or not isinstance(value, (int, float)) or math.isnan(value):
            return None, bucket[-1] if bucket else "judge returned no usable rating"
        return float(value), None

    async def groundedness_score(self, answer: str, contexts: list[str]) -> tuple[float | None, str | None]:
        return await self._score(self.groundedness, response=answer, retrieved_contexts=contexts)

    async def answer_relevancy(self, question: str, answer: str) -> tuple[float | None, str | None]:
        value, err = await self._score(self.relevancy, user_input=question, response=answer)
        if value is not None:
            value = max(0.0, min(1.0, value))  # cosine of signed hashing vectors can dip below 0
        return value, err


def ragas_version() -> str:
    try:
        from importlib.metadata import version

        return version("ragas")
    except Exception:  # noqa: BLE001
        return "unknown"
