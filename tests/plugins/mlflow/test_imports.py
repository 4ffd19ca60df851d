"""The MLflow layer at import time: nothing heavy, and ``mlflow`` is the library, not this package."""

from __future__ import annotations

import subprocess
import sys

LAYER = ("tollgate.mlflow", "tollgate.mlflow.tracking", "tollgate.mlflow.audit", "tollgate.mlflow.registry")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    # Both packages come from the editable install in .venv; cwd / so nothing else is on the path.
    return subprocess.run([sys.executable, "-c", "import sys; " + code], capture_output=True, text=True,
                          timeout=120, cwd="/")


def test_the_layer_does_not_import_mlflow_at_import_time() -> None:
    """DAG files import these at parse time; mlflow is imported only when a function runs."""
    proc = _python(f"import {', '.join(LAYER)}; "
                   "bad = [m for m in ('mlflow', 'pandas', 'boto3', 'scipy') if m in sys.modules]; "
                   "assert not bad, bad")
    assert proc.returncode == 0, proc.stderr


def test_mlflow_inside_the_layer_is_the_mlflow_library() -> None:
    """Imports are absolute: ``from mlflow import MlflowClient`` in tollgate/mlflow/*.py is the library's."""
    proc = _python("from tollgate.mlflow import tracking; import mlflow, tollgate.mlflow as ours; "
                   "c = tracking.client('http://127.0.0.1:9'); "
                   "assert type(c) is mlflow.MlflowClient, type(c); "
                   "assert mlflow.__file__ != ours.__file__ and 'site-packages' in mlflow.__file__, mlflow.__file__; "
                   "print(mlflow.__file__)")
    assert proc.returncode == 0, proc.stderr
