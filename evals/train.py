"""``python -m evals.train``: LoRA fine-tune of a parent version, merged into full weights.

    python -m evals.train --base /models/NAME/VERSION --train DIR/train.jsonl --eval DIR/eval.jsonl \
        --output /results/RUN/model --metrics /results/RUN/train.json [--max-steps 60] [--threads 2]

Runs in the serving environment (torch, transformers, peft: ``.venv-serve`` locally, the
training image on Kubernetes, one GPU there). ``--train`` and ``--eval`` are the files
``python -m evals.trainset`` writes. The output folder is a complete model (safetensors,
tokenizer, config, chat template) that ``evals.publish`` uploads and vLLM serves. The
metrics file is the one results schema: loss before/after on the held-out slice, steps,
examples, tokens, the weight change; its ``loss_curve`` and ``params`` sections hold the
curve and every training parameter.

Exit codes: 0 trained, 1 a check failed (the loss diverged, or the merge changed
nothing), 2 bad input (missing base folder or weights, an empty or malformed training
file, a bad flag), with one line on stderr naming it. Nothing is written on exit 2.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from evals import settings
from evals._cli import exit_with, flag_type
from evals.results import build_meta, parse_model_ref, utc_now, write_results

log = logging.getLogger("tollgate.train")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, type=Path, help="the parent's model folder (safetensors)")
    p.add_argument("--train", required=True, type=Path, help="training pairs, JSON lines {prompt, answer}")
    p.add_argument("--eval", type=Path, help="held-out pairs for the loss before and after")
    p.add_argument("--output", required=True, type=Path, help="folder for the merged model")
    p.add_argument("--metrics", required=True, type=Path, help="results JSON: loss curve and parameters")
    p.add_argument("--model", default=None, help="NAME:VERSION of the challenger (recorded in the results)")
    p.add_argument("--max-steps", type=flag_type(settings.positive_int), default=60)
    p.add_argument("--epochs", type=flag_type(settings.positive_float), default=2.0)
    p.add_argument("--batch-size", type=flag_type(settings.positive_int), default=8)
    p.add_argument("--learning-rate", type=flag_type(settings.positive_float), default=2e-4)
    p.add_argument("--max-length", type=flag_type(settings.number(int, minimum=16)), default=192)
    p.add_argument("--lora-r", type=flag_type(settings.positive_int), default=8)
    p.add_argument("--lora-alpha", type=flag_type(settings.positive_int), default=16)
    p.add_argument("--lora-dropout", type=flag_type(settings.number(float, minimum=0, maximum=0.9)), default=0.05)
    p.add_argument("--system", default=None, help="system prompt the examples are trained under")
    p.add_argument("--threads", type=flag_type(settings.positive_int), default=2,
                   help="CPU threads for torch (bounded: the machine is shared)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    name, version = parse_model_ref(args.model) if args.model else ("model", "0")
    from evals.training.lora import TrainConfig, fit

    cfg = TrainConfig(base=args.base, train=args.train, eval=args.eval, output=args.output,
                      max_steps=args.max_steps, epochs=args.epochs, batch_size=args.batch_size,
                      learning_rate=args.learning_rate, max_length=args.max_length, lora_r=args.lora_r,
                      lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, system=args.system,
                      threads=args.threads, seed=args.seed, device=args.device)
    started = utc_now()
    result = fit(cfg)
    losses = [p["loss"] for p in result.loss_curve]
    metrics = {
        "train_loss_first": losses[0], "train_loss_last": losses[-1],
        "train_loss_min": min(losses), "eval_loss_before": result.eval_loss_before,
        "eval_loss_after": result.eval_loss_after,
        "eval_loss_delta": (None if result.eval_loss_before is None or result.eval_loss_after is None
                            else result.eval_loss_after - result.eval_loss_before),
        "steps": result.steps, "train_examples": result.train_examples, "eval_examples": result.eval_examples,
        "train_tokens": result.train_tokens, "trainable_params": result.trainable_params,
        "changed_tensors": result.changed_tensors, "max_weight_delta": result.max_weight_delta,
        "train_duration_s": result.duration_s,
    }
    meta = build_meta(model=name, version=version, suite="train", started=started, device=result.device,
                      output=str(args.output), **result.extra)
    write_results(args.metrics, metrics=metrics, meta=meta, loss_curve=result.loss_curve, params=cfg.params())
    log.info("trained %d steps in %.1f s: loss %.3f -> %.3f, held-out %s -> %s; merged model in %s",
             result.steps, result.duration_s, losses[0], losses[-1], result.eval_loss_before,
             result.eval_loss_after, args.output)
    return 0


if __name__ == "__main__":
    exit_with(main)
