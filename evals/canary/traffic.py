"""Canary traffic: the replayed sample, each arm's prompt and parameters, and sending it.

A replayed traffic sample (JSONL: user_id, prompt, optional reference) is split between
the two OpenAI-compatible endpoints by a sticky hash of user_id (evals.canary.stats.assign_arm);
each answer with a reference is scored (normalized exact match, token-F1 partial credit).
An arm config is the JSON (a file, or inline) of tollgate.mlflow.registry.ServingConfig.to_dict():
the version's prompt template (an MLflow template where {{prompt}} is the traffic line, or
an evals prompt set whose order_normalization task is used) and generation parameters.
Without one, an arm gets the quality suite's order-normalization prompt
(evals/prompts/quality.yaml).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals import inputs, settings
from evals.canary.stats import CANARY, STABLE, ArmStats, assign_arm, order_line_quality
from evals.errors import BadInput
from evals.results import is_number
from evals.suites import prompts

log = logging.getLogger("tollgate.canary")

DEFAULT_TRAFFIC = settings.REPO_ROOT / "evals" / "datasets" / "canary_traffic.jsonl"

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
    """One line of the replayed sample."""

    user_id: str
    prompt: str
    reference: str | None


@dataclass(frozen=True)
class Arm:
    """One side of the comparison: where it answers and how it is asked."""

    name: str
    endpoint: str  # .../v1
    model: str | None  # served model name; None: ask the endpoint's /v1/models
    template: Template
    params: dict[str, Any]


# -- inputs ----------------------------------------------------------------------------------


def load_traffic(path: str | os.PathLike[str], flag: str = "--traffic") -> list[TrafficItem]:
    """The traffic sample (JSONL: user_id, prompt, optional reference), validated line by line."""
    p = Path(path)
    items: list[TrafficItem] = []
    for n, obj in inputs.json_lines(p, flag, "an object with user_id and prompt"):
        uid, prompt, ref = obj.get("user_id"), obj.get("prompt"), obj.get("reference")
        if isinstance(uid, bool) or not isinstance(uid, (str, int)) or str(uid) == "":
            raise BadInput(f"{flag} {p} line {n}: user_id must be a non-empty string or integer")
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadInput(f"{flag} {p} line {n}: prompt must be a non-empty string")
        if ref is not None and not isinstance(ref, str):
            raise BadInput(f"{flag} {p} line {n}: reference must be a string when given")
        items.append(TrafficItem(str(uid), prompt, ref))
    if not items:
        raise BadInput(f"{flag} {p}: no traffic lines")
    return items


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


def arm_config(path: str | None, flag: str) -> tuple[str | None, Template, dict[str, Any], str | None]:
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
        raise BadInput(f"{flag} {path}: must be a JSON object (tollgate.mlflow.registry.ServingConfig.to_dict())")
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
    """The /v1/chat/completions body of one traffic line for ARM."""
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
    """Requests, errors and quality scores of one arm's samples."""
    mine = [s for s in samples if s["arm"] == arm]
    return ArmStats(requests=len(mine), errors=sum(1 for s in mine if not s["ok"]),
                    quality=tuple(float(s["quality"]) for s in mine if s["ok"] and is_number(s["quality"])))
