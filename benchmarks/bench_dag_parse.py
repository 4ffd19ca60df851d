"""How long each DAG file takes to parse cold, one fresh process per file, in both modes.

    .venv/bin/python -m benchmarks.bench_dag_parse [--repeats 5] [--mode local|kubernetes|both]

Airflow's dag-processor parses every file in a child process of its own; the child
starts with Airflow (its SDK and the DagBag machinery) imported and pays for every
module the DAG file imports. This benchmark does the same: for each DAG file and each
repeat, a fresh interpreter imports ``airflow.sdk`` and ``DagBag`` first (not timed),
then parses that one file with ``DagBag`` (timed: Airflow's own per-file
``dagbag_stats`` duration). Modes: ``TOLLGATE_EXECUTION=local`` and ``kubernetes``.
A second parse of the same file in the same process ("re-parse") is reported too.
The file's own ``airflow.*`` imports are imported first, as the processor's
``parsing_pre_import_modules`` does. Two reference DAGs are measured the same way:
24 EmptyOperators (Airflow's floor) and two ``@task`` functions (the TaskFlow floor:
Airflow's decorator machinery loads on first use of ``task``).

Two things the dag-processor's child has that a bare interpreter has not:
- the manager calls ``gc.freeze()`` before it forks the children
  (``airflow.dag_processing.manager.DagFileProcessorManager.before_run``), so a garbage
  collection in the child does not walk Airflow's ~200k objects; the probe freezes after
  importing the SDK and the DagBag (without it a full collection, 30-300 ms here, lands in
  whichever file happens to cross the threshold);
- bytecode: the Airflow image installs Tollgate and its dependencies with pip, which
  compiles them. This checkout's environment may set ``PYTHONDONTWRITEBYTECODE`` (and uv
  does not compile on install), which would make every parse compile its modules from
  source; the probes run with a private ``PYTHONPYCACHEPREFIX``, filled by one untimed
  parse of each file before the measured ones. The DAG file itself is still compiled in
  every measured parse (a fresh copy each time).
Reported: median per file over the repeats. Goal: < 50 ms per file, cold, both modes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_MS = 50.0
MODES = ("local", "kubernetes")

REFERENCE = '''
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG(dag_id="reference_empty", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    prev = None
    for i in range(24):
        t = EmptyOperator(task_id=f"t{i}")
        if prev is not None:
            prev >> t
        prev = t
'''

# The TaskFlow floor: what any DAG with @task pays (Airflow's decorator machinery, PythonOperator).
TASKFLOW = '''
from datetime import datetime
from airflow.sdk import DAG, task
with DAG(dag_id="reference_taskflow", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    @task
    def first() -> int:
        return 1
    @task
    def second(x: int) -> int:
        return x
    second(first())
'''

# One file per process: what the dag-processor's child has imported before it parses:
# the SDK and the DagBag, plus the file's own airflow.* imports, which the processor
# pre-imports before it starts the child ([dag_processor] parsing_pre_import_modules,
# on by default; airflow.dag_processing.processor._pre_import_airflow_modules).
PROBE = '''
import gc, importlib, json, pathlib, shutil, sys, tempfile
import airflow.sdk  # noqa: F401
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.file import iter_airflow_imports
gc.freeze()  # as the dag-processor manager does before it forks the parsing children
path = pathlib.Path(sys.argv[1])
for module in iter_airflow_imports(str(path)):
    importlib.import_module(module)
single = pathlib.Path(tempfile.mkdtemp())
shutil.copy(path, single / path.name)
cold = DagBag(dag_folder=str(single))
assert not cold.import_errors, cold.import_errors
again = DagBag(dag_folder=str(single))
c, w = cold.dagbag_stats[0], again.dagbag_stats[0]
shutil.rmtree(single)
print(json.dumps([c.duration.total_seconds() * 1000, w.duration.total_seconds() * 1000, c.task_num]))
'''


def measure(path: Path, mode: str, env: dict[str, str]) -> tuple[float, float, int]:
    """Cold and re-parse milliseconds and task count of one file, in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True,
                          env={**env, "TOLLGATE_EXECUTION": mode}, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{path.name} ({mode}): {proc.stderr[-2000:]}")
    cold_ms, again_ms, tasks = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(cold_ms), float(again_ms), int(tasks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both")
    args = parser.parse_args()
    modes = MODES if args.mode == "both" else (args.mode,)
    rows: dict[tuple[str, str], tuple[list[float], list[float], int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference_empty.py"
        reference.write_text(REFERENCE)
        taskflow = Path(tmp) / "reference_taskflow.py"
        taskflow.write_text(TASKFLOW)
        env = {**os.environ, "AIRFLOW_HOME": str(Path(tmp) / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
               "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache")}  # bytecode as an installed image has it
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        files = [reference, taskflow, *sorted((ROOT / "dags").glob("*.py"))]
        try:
            for mode in modes:
                for path in files:
                    measure(path, mode, env)  # untimed: compiles what the file imports into the prefix
                    colds, agains, n = [], [], 0
                    for _ in range(args.repeats):
                        cold_ms, again_ms, n = measure(path, mode, env)
                        colds.append(cold_ms)
                        agains.append(again_ms)
                    rows[(mode, path.name)] = (colds, agains, n)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
    print(f"{'mode':<11} {'DAG file':<42} {'tasks':>5} {'cold ms':>8} {'re-parse ms':>12}  goal < {GOAL_MS:.0f} ms cold")
    worst = 0.0
    for (mode, name), (colds, agains, n) in rows.items():
        cold = statistics.median(colds)
        peer = name.startswith("reference_")
        worst = worst if peer else max(worst, cold)
        label = name + {"reference_empty.py": " (peer: EmptyOperators)",
                        "reference_taskflow.py": " (peer: 2 @task)"}.get(name, "")
        verdict = "" if peer else ("ok" if cold < GOAL_MS else "SLOW")
        print(f"{mode:<11} {label:<42} {n:>5} {cold:>8.1f} {statistics.median(agains):>12.1f}  {verdict}")
    return 0 if worst < GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
