"""The approval page's plots: what a person needs to see before saying yes, as PNG files.

- ``latency-cdf.png``: the latency distribution (end-to-end, per request) of the candidate
  and of the champion, from the latency benchmark's per-request samples;
- ``quality-per-category.png``: task success per task category, both versions, with the
  Wilson 95 % interval of each bar;
- ``quality-paired-deltas.png``: every gate's paired difference vs the champion with its
  95 % interval (the evidence the regression gates decide on), and 0 marked.

Matplotlib with the Agg backend (no display), imported inside the functions. A plot
whose data is missing is not drawn (the caller shows what exists); nothing here decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.suites import stats

CANDIDATE, CHAMPION = "#1f6feb", "#8b949e"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _latencies(results: dict[str, Any] | None) -> list[float]:
    out = []
    for s in (results or {}).get("samples") or []:
        if isinstance(s, dict) and not s.get("warmup") and not s.get("error"):
            value = s.get("e2e_ms", s.get("latency_ms"))
            if isinstance(value, (int, float)):
                out.append(float(value))
    return sorted(out)


def latency_cdf(candidate: dict[str, Any], champion: dict[str, Any] | None, path: Path,
                labels: tuple[str, str]) -> Path | None:
    cand, champ = _latencies(candidate), _latencies(champion)
    if not cand:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for values, label, color in ((cand, labels[0], CANDIDATE), (champ, labels[1], CHAMPION)):
        if values:
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.step(values, ys, where="post", label=f"{label} (n={len(values)})", color=color)
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("share of requests")
    ax.set_title("Latency CDF")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _per_task(results: dict[str, Any] | None) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for s in (results or {}).get("samples") or []:
        if isinstance(s, dict) and not s.get("error"):
            value = (s.get("scores") or {}).get("task_success_rate")
            if isinstance(value, (int, float)):
                out.setdefault(str(s.get("task")), []).append(float(value))
    return out


def per_category(candidate: dict[str, Any], champion: dict[str, Any] | None, path: Path,
                 labels: tuple[str, str]) -> Path | None:
    cand, champ = _per_task(candidate), _per_task(champion)
    tasks = sorted(cand)
    if not tasks:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    width = 0.38
    for offset, data, label, color in ((-width / 2, cand, labels[0], CANDIDATE), (width / 2, champ, labels[1], CHAMPION)):
        xs: list[float] = []
        means: list[float] = []
        errs: list[list[float]] = [[], []]
        for i, task in enumerate(tasks):
            values = data.get(task)
            if not values:
                continue
            mean = sum(values) / len(values)
            lo, hi = stats.wilson_interval(sum(values), len(values))
            xs.append(i + offset)
            means.append(mean)
            errs[0].append(mean - (lo or mean))
            errs[1].append((hi or mean) - mean)
        if xs:
            ax.bar(xs, means, width, yerr=errs, capsize=3, label=label, color=color)
    ax.set_xticks(range(len(tasks)), [f"{t}\n(n={len(cand[t])})" for t in tasks], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("task success (95 % CI)")
    ax.set_title("Task success per category")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def paired_deltas(gate_rows: list[dict[str, Any]], path: Path) -> Path | None:
    """One row per gate that has a paired Δ vs the champion with an interval (verdict JSON gates)."""
    rows = [g for g in gate_rows if g.get("delta_vs_baseline") is not None and g.get("delta_ci_low") is not None
            and g.get("delta_ci_high") is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.6 * len(rows) + 1.4), dpi=100)
    for i, g in enumerate(rows):
        d, lo, hi = float(g["delta_vs_baseline"]), float(g["delta_ci_low"]), float(g["delta_ci_high"])
        ax.errorbar([d], [i], xerr=[[d - lo], [hi - d]], fmt="o", color=CANDIDATE, capsize=4)
    ax.axvline(0.0, color="#cf222e", lw=1)
    ax.set_yticks(range(len(rows)), [f"{g.get('suite', '')}/{g['name']} (n={g.get('delta_n') or g.get('n')})"
                                     for g in rows], fontsize=8)
    ax.set_xlabel("candidate - champion, same items (95 % CI)")
    ax.set_title("Paired differences vs the champion")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
