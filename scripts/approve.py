"""Answer a pending Tollgate approval from the terminal, through Airflow's REST API.

    ./tollgate approve [--reject] [--run-id RUN] [--user approver] [--url http://127.0.0.1:8080]

The password comes from TOLLGATE_AIRFLOW_PASSWORD, else from the embedded default's
passwords file (.tollgate/airflow/passwords.json). Exit 0 when the answer was recorded,
1 when Airflow refused it (e.g. the user is not an assigned approver), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from evals import settings  # noqa: E402 - evals imports no Airflow

# tollgate's exceptions come from Airflow's SDK, which reads (and on first use writes) its
# config in AIRFLOW_HOME: point it at the embedded Airflow, not ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", str(settings.current().home / "airflow"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reject", action="store_true", help="reject instead of approve")
    parser.add_argument("--run-id", help="the model_promotion run (default: the only pending one)")
    parser.add_argument("--dag-id", default="model_promotion")
    parser.add_argument("--user", default="approver")
    parser.add_argument("--url", default=f"http://127.0.0.1:{settings.current().airflow_port}")
    args = parser.parse_args()
    password = os.environ.get("TOLLGATE_AIRFLOW_PASSWORD")
    if not password:
        path = settings.home() / "airflow" / "passwords.json"
        try:
            password = json.loads(path.read_text())[args.user]
        except (OSError, ValueError, KeyError):
            print(f"approve: error: no password for --user {args.user} (set TOLLGATE_AIRFLOW_PASSWORD)",
                  file=sys.stderr)
            return 2
    from tollgate.airflow_api import AirflowApi
    from tollgate.exceptions import ApprovalApiError

    try:
        api = AirflowApi(args.url, args.user, password)
        pending = api.pending_approvals(args.dag_id, args.run_id or "~")
        if not pending:
            print(f"approve: error: no pending approval in {args.dag_id}"
                  + (f" run {args.run_id}" if args.run_id else ""), file=sys.stderr)
            return 2
        if len(pending) > 1:
            runs = ", ".join(p.run_id for p in pending)
            print(f"approve: error: {len(pending)} approvals pending ({runs}); pick one with --run-id",
                  file=sys.stderr)
            return 2
        item = pending[0]
        option = "Reject" if args.reject else "Approve"
        api.respond(item, option)
    except ApprovalApiError as exc:
        print(f"approve: error: {exc}", file=sys.stderr)
        return 1 if exc.status in (401, 403, 409) else 2
    print(f"{option} recorded for {item.dag_id} run {item.run_id} by {args.user}: {item.subject}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
