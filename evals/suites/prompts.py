"""Prompt sets as data (evals/prompts/*.yaml): system prompt, few-shot turns, template, params.

The file's name, version and sha256 go into results meta, so a score can always be
traced to the exact prompt that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals import inputs
from evals.errors import BadInput
from evals.results import sha256_file

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
ALLOWED_PARAMS = {"temperature", "max_tokens", "top_p", "stop", "frequency_penalty", "presence_penalty"}


@dataclass(frozen=True)
class PromptTask:
    system: str
    few_shot: tuple[tuple[str, str], ...]
    user: str
    params: dict[str, Any]

    def messages(self, item: dict[str, Any]) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        for user, assistant in self.few_shot:
            msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        context = "\n\n".join(item.get("contexts") or [])
        msgs.append({"role": "user", "content": self.user.replace("{context}", context).replace("{prompt}", item["prompt"])})
        return msgs


@dataclass(frozen=True)
class PromptSet:
    name: str
    version: str
    path: Path
    sha256: str
    tasks: dict[str, PromptTask]

    def task(self, key: str) -> PromptTask:
        return self.tasks.get(key) or self.tasks["default"]

    def provenance(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "file": self.path.name, "sha256": self.sha256,
                "params": {k: t.params for k, t in self.tasks.items()}}


def default_prompts(suite: str) -> Path:
    return PROMPTS_DIR / f"{suite}.yaml"


def load_prompts(path: str | Path, flag: str = "--prompts") -> PromptSet:
    p = Path(path)
    data = inputs.read_yaml(p, flag)
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict) or not data["tasks"]:
        raise BadInput(f"{flag} {p}: needs a non-empty 'tasks' mapping")
    defaults = data.get("params") or {}
    tasks = {}
    for key, spec in data["tasks"].items():
        if not isinstance(spec, dict) or "user" not in spec or "{prompt}" not in str(spec["user"]):
            raise BadInput(f"{flag} {p}: tasks.{key} needs a 'user' template containing {{prompt}}")
        params = {**defaults, **(spec.get("params") or {})}
        unknown = set(params) - ALLOWED_PARAMS
        if unknown:
            raise BadInput(f"{flag} {p}: tasks.{key} has unknown generation params {sorted(unknown)}")
        shots = []
        for i, shot in enumerate(spec.get("few_shot") or []):
            if not isinstance(shot, dict) or "user" not in shot or "assistant" not in shot:
                raise BadInput(f"{flag} {p}: tasks.{key}.few_shot[{i}] needs user and assistant")
            shots.append((str(shot["user"]), str(shot["assistant"])))
        tasks[str(key)] = PromptTask(system=str(spec.get("system") or ""), few_shot=tuple(shots),
                                     user=str(spec["user"]), params=params)
    return PromptSet(name=str(data.get("name", p.stem)), version=str(data.get("version", "0")), path=p,
                     sha256=sha256_file(p), tasks=tasks)
