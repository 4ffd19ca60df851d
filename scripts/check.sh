#!/usr/bin/env bash
# The static checks ./tollgate test runs before pytest (CI runs exactly that):
#   ruff check   lint, security (S), complexity (C901 <= 12, exceptions marked in place) and the
#                two import boundaries: no airflow in evals/, no heavy module-level imports in
#                dags/ and plugins/ (pyproject.toml [tool.ruff.lint])
#   mypy         evals/ and plugins/tollgate; strict on the decision engines and contracts
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '%s check: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
start=$SECONDS
.venv/bin/ruff check --no-cache .
log "ruff check clean"
.venv/bin/mypy --no-incremental --cache-dir=/dev/null 2>&1 | tail -n 40
status=${PIPESTATUS[0]}
[ "$status" = 0 ] || { echo "check: mypy failed (exit $status)" >&2; exit "$status"; }
log "mypy clean; static checks took $((SECONDS - start)) s"
