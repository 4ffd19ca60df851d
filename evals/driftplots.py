"""``python -m evals.driftplots``: the pictures of one drift check, for MLflow.

    python -m evals.driftplots --reference SRC --reference-start T --reference-end T \
        --current SRC --current-start T --current-end T --report drift.json --output-dir plots/

Writes PNGs: ``hist_<feature>.png`` (reference vs current, per numeric feature, on the
reference's quantile bins), ``psi.png`` (PSI per feature from the drift report, with the
warn and drift lines) and ``embedding_projection.png`` (prompt embeddings of both windows
on the reference's first two principal components). Pictures explain a verdict, they do
not make it: ``evals.drift`` and ``evals.gate_check`` decide. Exit 2 on bad input (a
missing source or report); a window without rows gets no histogram, not an error.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evals import inputs
from evals._cli import exit_with

log = logging.getLogger("tollgate.driftplots")
SAMPLE = 400  # prompts per window in the projection: a picture, not a statistic
PSI_WARN, PSI_DRIFT = 0.1, 0.2


def psi_values(report: Mapping[str, Any]) -> dict[str, float]:
    """{feature: PSI} from a drift report, wherever it keeps them (``...<feature>...psi``; pure)."""
    out: dict[str, float] = {}
    skip = {"features", "statistics", "stats", "numeric", "categorical", "metrics"}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if str(key).lower() == "psi" and isinstance(value, (int, float)) and math.isfinite(value):
                    out[next((p for p in reversed(path) if p not in skip), "?")] = float(value)
                else:
                    walk(value, (*path, str(key)))
        elif isinstance(node, list):
            for item in node:
                name = (item.get("feature") or item.get("name")) if isinstance(item, Mapping) else None
                walk(item, (*path, str(name)) if name else path)

    walk({k: v for k, v in report.items() if k != "metrics"}, ())
    if not out:  # flat metric names: features.prompt_tokens.psi, prompt_tokens_psi or psi_prompt_tokens
        for key, value in (report.get("metrics") or {}).items():
            parts = str(key).replace("/", ".").split(".")
            if isinstance(value, (int, float)) and math.isfinite(value) and "psi" in parts[-1]:
                last = parts[-1]
                feature = parts[-2] if last == "psi" and len(parts) > 1 else last.replace("psi_", "").replace("_psi", "")
                out[feature] = float(value)
    return out


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def histograms(ref: Any, cur: Any, out: Path) -> list[Path]:
    import numpy as np

    plt = _plt()
    written = []
    for name, values in ref.numeric.items():
        a = values[np.isfinite(values)]
        b = cur.numeric.get(name)
        b = b[np.isfinite(b)] if b is not None else np.array([])
        if a.size == 0 or b.size == 0:
            continue
        edges = np.unique(np.quantile(a, np.linspace(0, 1, 11)))
        if edges.size < 2:
            edges = np.array([a.min() - 0.5, a.max() + 0.5])
        lo, hi = min(edges[0], b.min()), max(edges[-1], b.max())
        bins = np.unique(np.concatenate([[lo], edges, [hi]]))
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(a, bins=bins, alpha=0.55, density=True, label=f"reference (n={a.size})")
        ax.hist(b, bins=bins, alpha=0.55, density=True, label=f"current (n={b.size})")
        ax.set_title(name)
        ax.legend()
        path = out / f"hist_{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def psi_chart(values: Mapping[str, float], out: Path) -> Path | None:
    if not values:
        return None
    plt = _plt()
    names = sorted(values, key=lambda k: -values[k])
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.5))
    colors = ["#c0392b" if values[n] > PSI_DRIFT else "#e67e22" if values[n] > PSI_WARN else "#27ae60" for n in names]
    ax.barh(names, [values[n] for n in names], color=colors)
    ax.axvline(PSI_WARN, ls="--", color="#e67e22", lw=1)
    ax.axvline(PSI_DRIFT, ls="--", color="#c0392b", lw=1)
    ax.invert_yaxis()
    ax.set_xlabel("PSI (reference bins)")
    fig.tight_layout()
    path = out / "psi.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def projection(ref_prompts: Sequence[str], cur_prompts: Sequence[str], out: Path) -> Path | None:
    """Both windows' prompt embeddings on the reference's first two principal components."""
    if len(ref_prompts) < 3 or not cur_prompts:
        return None
    import numpy as np

    from evals.embeddings import embed

    rng = np.random.default_rng(0)
    pick = lambda xs: [xs[i] for i in sorted(rng.choice(len(xs), min(SAMPLE, len(xs)), replace=False))]  # noqa: E731
    a, b = embed(pick(list(ref_prompts))), embed(pick(list(cur_prompts)))
    mean = a.mean(axis=0)
    _, _, vt = np.linalg.svd(a - mean, full_matrices=False)
    pa_, pb = (a - mean) @ vt[:2].T, (b - mean) @ vt[:2].T
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(pa_[:, 0], pa_[:, 1], s=8, alpha=0.5, label=f"reference ({len(a)})")
    ax.scatter(pb[:, 0], pb[:, 1], s=8, alpha=0.5, label=f"current ({len(b)})")
    ax.set_title("prompt embeddings (reference PCA)")
    ax.legend()
    fig.tight_layout()
    path = out / "embedding_projection.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals.driftplots", description=__doc__.split("\n\n")[0])
    for which in ("reference", "current"):
        p.add_argument(f"--{which}", required=True, help="request-log source (s3://, folder or Parquet file)")
        p.add_argument(f"--{which}-start", required=True)
        p.add_argument(f"--{which}-end", required=True)
    p.add_argument("--report", required=True, type=Path, help="the drift results JSON (for the PSI chart)")
    p.add_argument("--output-dir", required=True, type=Path)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from evals.drift.features import extract
    from evals.drift.source import read_source
    from evals.requestlog import as_utc

    report = inputs.read_json(args.report, "--report")
    windows = {}
    for which in ("reference", "current"):
        win = read_source(getattr(args, which), start=as_utc(getattr(args, f"{which}_start")),
                          end=as_utc(getattr(args, f"{which}_end")), flag=f"--{which}")
        windows[which] = extract(win.table)
    out: Path = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    written = histograms(windows["reference"], windows["current"], out)
    written += [p for p in (psi_chart(psi_values(report if isinstance(report, dict) else {}), out),
                            projection(windows["reference"].prompts, windows["current"].prompts, out)) if p]
    print(f"{len(written)} plot(s) in {out}")
    return 0


if __name__ == "__main__":
    exit_with(main)
