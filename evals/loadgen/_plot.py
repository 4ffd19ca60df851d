"""Latency CDFs (TTFT and end-to-end) as a PNG beside the results JSON, for MLflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evals.loadgen._record import RequestRecord


def write_cdf_png(path: str | Path, records: list[RequestRecord], title: str) -> Path:
    """Plot the empirical CDFs of TTFT and E2E latency of the successful requests."""
    import matplotlib

    matplotlib.use("Agg")  # no display in pods or CI
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.ok]
    series = {
        "TTFT": np.sort([t * 1e3 for r in ok if (t := r.ttft_s) is not None]),
        "E2E latency": np.sort([r.e2e_s * 1e3 for r in ok]),
    }
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, (label, values) in zip(axes, series.items(), strict=True):
        if len(values):
            ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post")
            for q, style in ((0.5, ":"), (0.95, "--"), (0.99, "-.")):
                ax.axhline(q, color="grey", linestyle=style, linewidth=0.8)
        else:
            ax.text(0.5, 0.5, "no successful requests", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(f"{label} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.01)
        ax.set_title(f"{label} CDF (n={len(values)})")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
