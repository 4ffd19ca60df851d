"""The run folder on the Airflow side: a local folder, synced with S3 in kubernetes mode.

Locally the tasks and the step subprocesses share one folder (the claim's ``results/``
under ``$TOLLGATE_HOME/volumes``). In kubernetes mode the workers mount no claim: the
pods pull and push the run folder under ``$TOLLGATE_RESULTS_URI/<folder>`` (``evals.handoff``)
and the tasks do the same around their work on the local copy, so ``tollgate.promotion``
reads and writes plain files in both modes.

    with synced(folder, pull=True):          # record_evidence: the pods' results, then read them
        ...
    with synced(folder, push=True):          # materialize_prompts / fetch_baseline: write, then upload
        ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tollgate import constants as c
from tollgate.exceptions import TollgateError


def remote_prefix(results_dir: str) -> str | None:
    """The S3 prefix of a run folder in kubernetes mode; None in local mode (the folder is shared)."""
    from tollgate.operators.base import execution_mode
    from tollgate.operators.kubernetes import results_prefix

    if execution_mode() is not c.ExecutionMode.KUBERNETES:
        return None
    return results_prefix(results_dir)


@contextlib.contextmanager
def synced(results_dir: str, *, pull: bool = False, push: bool = False) -> Iterator[Path]:
    """The local copy of ``results_dir``: pulled from S3 first and/or pushed after (kubernetes mode)."""
    from evals import handoff
    from tollgate.promotion import local_results_dir

    local = local_results_dir(results_dir)
    prefix = remote_prefix(results_dir)
    before: handoff.Snapshot = {}
    if prefix and pull:
        try:
            before = handoff.pull(prefix, local)
        except Exception as exc:  # noqa: BLE001 - botocore's many errors: one message naming the prefix
            raise TollgateError(f"cannot read run folder {prefix}: {type(exc).__name__}: {exc}") from None
    yield local
    if prefix and push:
        try:
            handoff.push(prefix, local, before)
        except Exception as exc:  # noqa: BLE001 - as above
            raise TollgateError(f"cannot write run folder {prefix}: {type(exc).__name__}: {exc}") from None
