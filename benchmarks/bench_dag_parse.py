"""How long each DAG file takes to parse, from Airflow's own DagBag per-file stats.

    .venv/bin/python -m benchmarks.bench_dag_parse [--repeats 5]

Each repeat runs in a fresh interpreter and parses every file twice:
- "cold": only Airflow's SDK imported first; the file pays for every module it imports.
- "processor": the modules the file imports at top level are imported first, as
  Airflow's dag-processor does before it forks a parser (`[dag_processor]
  parsing_pre_import_modules`, on by default). This is the time every re-parse costs.
A reference DAG of 24 EmptyOperators (the peer: Airflow's own floor) is measured the
same way. Reported: median per file over the repeats. Goal: < 50 ms per file (processor).
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

PROBE = '''
import ast, importlib, json, pathlib, sys, tempfile, shutil
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
out = {}
for folder in sys.argv[1:]:
    for path in sorted(pathlib.Path(folder).glob("*.py")):
        single = pathlib.Path(tempfile.mkdtemp())
        shutil.copy(path, single / path.name)
        cold = DagBag(dag_folder=str(single))
        assert not cold.import_errors, cold.import_errors
        for node in ast.parse(path.read_text()).body:  # what parsing_pre_import_modules does
            if isinstance(node, ast.Import):
                for a in node.names: importlib.import_module(a.name)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                importlib.import_module(node.module)
        (single / path.name).write_text(path.read_text())
        warm = DagBag(dag_folder=str(single))
        c, w = cold.dagbag_stats[0], warm.dagbag_stats[0]
        out[path.name] = (c.duration.total_seconds() * 1000, w.duration.total_seconds() * 1000, w.task_num)
        shutil.rmtree(single)
print(json.dumps(out))
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {}
    cold: dict[str, list[float]] = {}
    tasks: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ref_dir = Path(tmp) / "reference"
        ref_dir.mkdir()
        (ref_dir / "reference_empty.py").write_text(REFERENCE)
        env = {**os.environ, "AIRFLOW_HOME": str(Path(tmp) / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])}
        for _ in range(args.repeats):
            proc = subprocess.run([sys.executable, "-c", PROBE, str(ref_dir), str(ROOT / "dags")],
                                  capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                return 1
            for name, (cold_ms, ms, n) in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                samples.setdefault(name, []).append(ms)
                cold.setdefault(name, []).append(cold_ms)
                tasks[name] = n
    print(f"{'DAG file':<42} {'tasks':>5} {'cold ms':>8} {'processor ms':>13}  goal < {GOAL_MS:.0f} ms")
    worst = 0.0
    for name in sorted(samples, key=lambda n: (n != "reference_empty.py", n)):
        med = statistics.median(samples[name])
        worst = max(worst, med) if name != "reference_empty.py" else worst
        label = name + (" (peer: EmptyOperators)" if name == "reference_empty.py" else "")
        print(f"{label:<42} {tasks[name]:>5} {statistics.median(cold[name]):>8.1f} {med:>13.1f}  "
              f"{'' if name == 'reference_empty.py' else ('ok' if med < GOAL_MS else 'SLOW')}")
    return 0 if worst < GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
