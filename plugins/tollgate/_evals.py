"""Access to the pod-side package (evals/) from the Airflow side, for the local backend.

Airflow puts plugins/ and dags/ on sys.path, not the repository root; the local
backend needs evals.settings (TOLLGATE_HOME) and evals.servers (the launcher).
"""

from __future__ import annotations

import sys
from types import ModuleType

from tollgate.constants import REPO_ROOT


def _ensure_repo_on_path() -> None:
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.append(root)


def settings() -> ModuleType:
    _ensure_repo_on_path()
    from evals import settings as mod

    return mod


def servers() -> ModuleType:
    _ensure_repo_on_path()
    from evals import servers as mod

    return mod
