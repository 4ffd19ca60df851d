"""The reference window, summarised once and stored with the champion (one ``.npz`` file).

Why a summary: the reference (the traffic right after the champion was promoted) does not
change between hourly windows, so everything a window is compared with is computed once:

- numeric features: the sorted values (up to ``MAX_SORTED``; above that, evenly spaced
  order statistics, so KS and Wasserstein stay O(n) per window and the file bounded; the
  summary records whether the values are exact), the PSI quantile bin edges and the
  reference's counts in them, mean, variance, standard deviation and size;
- categorical features: the count per category;
- prompts: an embedding sample, k-means centroids and the far-distance threshold.

The file is a NumPy ``.npz`` (no pickle: ``allow_pickle=False`` on load) with one JSON
entry ``meta`` (sizes, categories, the source, the creation time, the summary version).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evals.drift import embedding, stats
from evals.drift.features import Features
from evals.errors import BadInput

VERSION = 1
MAX_SORTED = 2_000_000


@dataclass
class NumericRef:
    sorted: np.ndarray
    edges: np.ndarray
    counts: np.ndarray
    n: int
    mean: float
    var: float
    std: float
    exact: bool


@dataclass
class ReferenceSummary:
    rows: int
    numeric: dict[str, NumericRef] = field(default_factory=dict)
    categorical: dict[str, dict[str, int]] = field(default_factory=dict)
    prompts: embedding.EmbeddingReference | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"version": VERSION, "rows": self.rows, "info": self.info, "numeric": {},
                                "categorical": self.categorical}
        for name, ref in self.numeric.items():
            arrays[f"num.{name}.sorted"] = ref.sorted
            arrays[f"num.{name}.edges"] = ref.edges
            arrays[f"num.{name}.counts"] = ref.counts
            meta["numeric"][name] = {"n": ref.n, "mean": ref.mean, "var": ref.var, "std": ref.std, "exact": ref.exact}
        if self.prompts is not None:
            arrays.update(self.prompts.arrays())
            meta["prompts"] = self.prompts.meta()
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp.npz")
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(p)
        return p


def _numeric_ref(values: np.ndarray) -> NumericRef:
    s = np.sort(np.asarray(values, dtype=np.float64))
    n = int(s.size)
    exact = n <= MAX_SORTED
    kept = s if exact else s[np.linspace(0, n - 1, MAX_SORTED).round().astype(np.int64)]
    edges = stats.quantile_edges(s)
    return NumericRef(sorted=kept, edges=edges, counts=stats.bin_counts(s, edges), n=n,
                      mean=float(s.mean()) if n else float("nan"), var=float(s.var(ddof=1)) if n > 1 else 0.0,
                      std=float(s.std()) if n else 0.0, exact=exact)


def summarise(feats: Features, *, info: dict[str, Any] | None = None, with_embeddings: bool = True,
              embed: Any = None) -> ReferenceSummary:
    summary = ReferenceSummary(rows=feats.rows, info=dict(info or {}))
    for name, values in feats.numeric.items():
        summary.numeric[name] = _numeric_ref(values)
    for name, arr in feats.categorical.items():
        summary.categorical[name] = stats.value_counts(arr)
    if with_embeddings:
        summary.prompts = embedding.summarise(feats.prompts, embed=embed)
    return summary


def is_summary_path(path: str) -> bool:
    return str(path).endswith(".npz")


def load(path: str | Path, flag: str = "--reference") -> ReferenceSummary:
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{flag} {p}: no such reference summary file")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(bytes(arrays.pop("meta")).decode("utf-8"))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise BadInput(f"{flag} {p}: not a drift reference summary ({type(exc).__name__})") from None
    if meta.get("version") != VERSION:
        raise BadInput(f"{flag} {p}: reference summary version {meta.get('version')!r}, expected {VERSION}")
    summary = ReferenceSummary(rows=int(meta["rows"]), categorical={k: {c: int(n) for c, n in v.items()}
                                                                     for k, v in meta["categorical"].items()},
                               info=meta.get("info") or {})
    for name, m in meta["numeric"].items():
        summary.numeric[name] = NumericRef(sorted=arrays[f"num.{name}.sorted"], edges=arrays[f"num.{name}.edges"],
                                           counts=arrays[f"num.{name}.counts"], n=int(m["n"]), mean=float(m["mean"]),
                                           var=float(m["var"]), std=float(m["std"]), exact=bool(m["exact"]))
    if "prompts" in meta and "emb_sample" in arrays:
        pm = meta["prompts"]
        summary.prompts = embedding.EmbeddingReference(
            sample=arrays["emb_sample"], centroids=arrays["emb_centroids"], far_threshold=float(pm["far_threshold"]),
            bandwidth=float(pm["bandwidth"]), n_prompts=int(pm["n_prompts"]))
    return summary
