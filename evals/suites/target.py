"""The model under test (and the judge) over the OpenAI-compatible HTTP API.

Retries: the openai client's own (exponential backoff with jitter on connection
errors, timeouts, 408/409/429 and 5xx; `max_retries` per request). Concurrency is
bounded by a semaphore the caller owns. Token counts come from the server's
`usage` block; nothing here tokenizes locally.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from evals.contract import JUDGE_API_KEY_ENV
from evals.errors import BadInput

PROBE_TIMEOUT_S = 8.0  # the whole probe answers within 10 s (DESIGN: unreachable -> exit 2 within 10 s)
ENDPOINT_ENV = ("TOLLGATE_ENDPOINT", "OPENAI_BASE_URL")


def resolve_endpoint(flag_value: str | None, flag: str = "--endpoint") -> str:
    """The OpenAI base URL (ending in /v1) from the flag or the environment."""
    raw = flag_value or next((os.environ[v] for v in ENDPOINT_ENV if os.environ.get(v)), None)
    if not raw:
        raise BadInput(f"no endpoint: pass {flag} or set {' or '.join(ENDPOINT_ENV)}")
    url = raw.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BadInput(f"{flag} {raw!r} is not an http(s) URL")
    return url if url.endswith("/v1") else url + "/v1"


def api_key() -> str:
    # vLLM accepts any key unless started with --api-key; a real provider needs OPENAI_API_KEY.
    return os.environ.get("TOLLGATE_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"


def judge_api_key() -> str:
    """The judge's key: TOLLGATE_JUDGE_API_KEY (the eval pods get it from the judge's Secret).

    Never the model's key: the judge is another service, and the candidate's credentials
    must not be sent to it. "EMPTY" (what vLLM accepts) when unset.
    """
    return os.environ.get(JUDGE_API_KEY_ENV) or "EMPTY"


def served_models(endpoint: str, flag: str = "--endpoint") -> list[str]:
    """GET /models once, bounded: an endpoint that does not answer is bad input (exit 2)."""
    try:
        resp = httpx.get(f"{endpoint}/models", timeout=httpx.Timeout(PROBE_TIMEOUT_S, connect=5.0),
                         headers={"Authorization": f"Bearer {api_key()}"})
    except httpx.HTTPError as exc:
        raise BadInput(f"{flag} {endpoint} is unreachable ({type(exc).__name__}: {exc or 'no answer'})") from None
    if resp.status_code != 200:
        raise BadInput(f"{flag} {endpoint}/models answered HTTP {resp.status_code}; is it an OpenAI-compatible server?")
    try:
        return [m["id"] for m in resp.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise BadInput(f"{flag} {endpoint}/models did not return an OpenAI model list") from None


def check_model_served(endpoint: str, model: str, flag: str = "--model", endpoint_flag: str = "--endpoint") -> None:
    models = served_models(endpoint, endpoint_flag)
    if model not in models:
        raise BadInput(f"{flag} {model!r} is not served at {endpoint}; served models: {', '.join(models) or 'none'}")


@dataclass
class Completion:
    text: str = ""
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None  # one line: what went wrong, after retries
    error_kind: str | None = None  # http_5xx, http_4xx, timeout, connection, malformed, empty
    attempts: dict[str, Any] = field(default_factory=dict)

    def usage(self) -> dict[str, int | None]:
        total = None
        if self.prompt_tokens is not None and self.completion_tokens is not None:
            total = self.prompt_tokens + self.completion_tokens
        return {"prompt": self.prompt_tokens, "completion": self.completion_tokens, "total": total}


def make_client(endpoint: str, timeout_s: float, max_retries: int, *, key: str | None = None) -> Any:
    """An AsyncOpenAI client; ``key`` defaults to the model's (``api_key()``)."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=endpoint, api_key=key or api_key(), max_retries=max_retries,
                       timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)))  # type: ignore[arg-type]  # openai re-exports httpx's Timeout


def classify(exc: BaseException) -> tuple[str, str]:
    """(kind, one-line reason) for an exception from the openai client."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout", "request timed out after retries"
    if isinstance(exc, openai.APIStatusError):
        kind = "http_5xx" if exc.status_code >= 500 else "http_4xx"
        return kind, f"HTTP {exc.status_code}: {' '.join(str(exc.message).split())[:200]}"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return "connection", f"connection failed: {type(cause).__name__}: {' '.join(str(cause).split())[:200]}"
    if isinstance(exc, (ValueError, KeyError, TypeError, AttributeError)):
        return "malformed", f"malformed response: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return "other", f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


async def complete(client: Any, model: str, messages: list[dict[str, str]], params: dict[str, Any],
                   seed: int | None, semaphore: asyncio.Semaphore) -> Completion:
    """One chat completion; failures become a Completion with `error`, never an exception."""
    async with semaphore:
        started = time.perf_counter()
        try:
            resp = await client.chat.completions.create(model=model, messages=messages, seed=seed, **params)
            choice = resp.choices[0]
            text = choice.message.content or ""
        except Exception as exc:  # noqa: BLE001 - every failure is recorded per sample
            kind, reason = classify(exc)
            return Completion(error=reason, error_kind=kind, latency_ms=(time.perf_counter() - started) * 1000)
        latency = (time.perf_counter() - started) * 1000
    usage = getattr(resp, "usage", None)
    out = Completion(text=text, latency_ms=latency, finish_reason=choice.finish_reason,
                     prompt_tokens=getattr(usage, "prompt_tokens", None),
                     completion_tokens=getattr(usage, "completion_tokens", None))
    if not text.strip():
        out.error, out.error_kind = "empty answer from the server", "empty"
    return out
