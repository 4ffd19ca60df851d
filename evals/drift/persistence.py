"""Persistence over consecutive windows: a drift gate fails only after N windows in a row.

Why: one hour of odd traffic (a batch job, a holiday spike) should not start a retrain.
State is a small JSON file the caller keeps between runs (``--state``; the drift_monitor
DAG keeps it on the results volume per model): the last windows, each with its id and the
gates that broke in it. A window id seen before (a retried task) replaces its entry
instead of counting twice. With N = 1 (the default) no state is needed.

When a gate broke in fewer than N consecutive windows, its metric in the results is set to
the metric's neutral value (0, or 1 for ratios) and the window's own value is kept as
``METRIC_window``: so ``evals.gate_check`` on the results file agrees with the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evals.errors import BadInput
from evals.results import write_json_atomic

VERSION = 1
KEEP = 48


def load_state(path: str | None) -> dict[str, Any]:
    if not path or not Path(path).is_file():
        return {"version": VERSION, "windows": []}
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"--state {path}: not a drift state file ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("version") != VERSION or not isinstance(state.get("windows"), list):
        raise BadInput(f"--state {path}: not a drift state file (version {VERSION} with 'windows')")
    return state


def streaks(state: dict[str, Any], window_id: str, broken: set[str]) -> tuple[dict[str, int], dict[str, Any]]:
    """Consecutive-window counts per broken gate including this window, and the new state."""
    windows = [w for w in state["windows"] if w.get("id") != window_id]
    windows.append({"id": window_id, "broken": sorted(broken)})
    windows = windows[-KEEP:]
    counts: dict[str, int] = {}
    for gate in broken:
        n = 0
        for w in reversed(windows):
            if gate not in w.get("broken", []):
                break
            n += 1
        counts[gate] = n
    return counts, {"version": VERSION, "windows": windows}


def save_state(path: str | None, state: dict[str, Any]) -> None:
    if path:
        write_json_atomic(path, state)
