"""Retraining a challenger from production traffic (the pod side of the ``retrain`` DAG).

- :mod:`evals.training.dataset`: request-log rows -> a deduplicated, safety-filtered training
  set and a held-out eval slice in the quality suite's schema (``python -m evals.trainset``);
- :mod:`evals.training.lora`: a LoRA fine-tune of the parent's safetensors weights with peft,
  merged back into full weights vLLM serves (``python -m evals.train``, in the serving env).
"""
