"""Roll a model back from the terminal: ``./tollgate rollback MODEL [--to VERSION] --reason WHY``.

Starts a ``model_rollback`` run through Airflow's REST API as ``--user`` (who must be one
of TOLLGATE_APPROVERS: the same role as a promotion's approval, checked here and by
Airflow's login), confirmed by that user, and waits for it. A running canary is aborted
first; the previous champion (from the alias audit history) or ``--to VERSION`` goes back
into the stable slot and the alias ``champion`` back to it. Exit 0 rolled back, 1 the
rollback failed (the run's reason is printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from evals import settings  # noqa: E402 - evals imports no Airflow

os.environ.setdefault("AIRFLOW_HOME", str(settings.current().home / "airflow"))


def fail(msg: str, code: int = 2) -> int:
    print(f"rollback: error: {msg}", file=sys.stderr)
    return code


def main() -> int:
    from evals.contract import MODEL_NAME_PATTERN, MODEL_VERSION_PATTERN

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--to", help="version to restore (default: the previous champion)")
    parser.add_argument("--reason", required=True, help="why (kept in the audit record)")
    parser.add_argument("--user", default="approver")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the rollback run")
    parser.add_argument("--url", default=f"http://127.0.0.1:{settings.current().airflow_port}")
    args = parser.parse_args()
    if not re.fullmatch(MODEL_NAME_PATTERN, args.model):
        return fail(f"MODEL {args.model!r} is not a model name")
    if args.to is not None and not re.fullmatch(MODEL_VERSION_PATTERN, args.to):
        return fail(f"--to {args.to!r} is not a model version")
    if not args.reason.strip():
        return fail("--reason must say why")
    from tollgate import settings as af_settings

    if args.user not in af_settings.current().approvers:
        return fail(f"--user {args.user} is not in TOLLGATE_APPROVERS: a rollback needs the approval role", 1)
    password = os.environ.get("TOLLGATE_AIRFLOW_PASSWORD")
    if not password:
        try:
            password = json.loads((settings.home() / "airflow" / "passwords.json").read_text())[args.user]
        except (OSError, ValueError, KeyError):
            return fail(f"no password for --user {args.user} (set TOLLGATE_AIRFLOW_PASSWORD)")
    from tollgate.airflow_api import AirflowApi
    from tollgate.exceptions import ApprovalApiError

    try:
        api = AirflowApi(args.url, args.user, password)
        api.unpause("model_rollback")
        run_id = api.trigger("model_rollback", {"model_name": args.model, "to_version": args.to or "",
                                                "reason": args.reason, "confirmed_by": args.user})
        print(f"rollback of {args.model} started: model_rollback run {run_id}")
        run = api.wait_for_run("model_rollback", run_id, args.timeout)
    except ApprovalApiError as exc:
        return fail(str(exc), 1 if exc.status in (401, 403, 409) else 2)
    if run.get("state") != "success":
        states = api.task_states("model_rollback", run_id)
        return fail(f"model_rollback run {run_id} {run.get('state')}: {states} (see the rollback task's log)", 1)
    result = api.xcom("model_rollback", run_id, "rollback") or {}
    print(f"{args.model}: champion {result.get('from')} -> {result.get('to')}, serving "
          f"{(result.get('serving') or {}).get('stable', {}).get('version')}; by {args.user}: {args.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
