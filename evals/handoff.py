"""A run folder through S3: how pods and Airflow tasks share files in kubernetes mode.

    python -m evals.handoff --prefix s3://BUCKET/results/RUN_FOLDER --dir /results/RUN_FOLDER -- \
        python -m evals.run --suite quality ... --output /results/RUN_FOLDER/quality.json

Locally every step and task sees one folder (the model claim's ``results/``). In a
cluster the Airflow workers mount no claim, so the run folder lives under an S3 prefix
(``TOLLGATE_RESULTS_URI`` + the run folder): the kubernetes backend wraps each step's
command in this module, which

1. pulls every object under ``--prefix`` into ``--dir`` (prompts, the champion's
   baseline, results of earlier steps),
2. runs the command (same environment, output passed through),
3. pushes every file the command created or changed back under ``--prefix``, also when
   the command exited 1 (a failed gate still wrote its verdict), and
4. exits with the command's exit code, so the exit-code contract holds through the wrapper.

A failed pull or push exits 3 (infrastructure: the task retries), never 0/1/2, so a
missing upload can never read as a judged answer. The Airflow side uses ``pull``/``push``
on the same prefix (``tollgate.resultstore``).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evals.errors import BadInput

log = logging.getLogger("evals.handoff")

EXIT_HANDOFF_FAILED = 3  # not 0/1/2: infrastructure, the task's retries apply

Snapshot = dict[str, tuple[int, int]]


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix/"); bad input names the URL."""
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise BadInput(f"--prefix {url!r} must be s3://bucket/prefix")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    if not bucket or not prefix or "/../" in f"/{prefix}/":
        raise BadInput(f"--prefix {url!r} must be s3://bucket/prefix (a bucket and a non-empty prefix)")
    return bucket, prefix + "/"


def snapshot(folder: Path) -> Snapshot:
    """Relative path -> (size, mtime_ns) of every file under ``folder``."""
    if not folder.is_dir():
        return {}
    out: Snapshot = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[path.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def _client() -> Any:
    from evals.weights.s3 import s3_client

    return s3_client(max_pool_connections=4)


def pull(url: str, folder: Path, client: Any = None) -> Snapshot:
    """Download every object under ``url`` into ``folder``; return the folder's snapshot after it."""
    bucket, prefix = split_url(url)
    client = client or _client()
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):]
            target = (root / rel).resolve()
            if not rel or rel.endswith("/") or root not in target.parents:
                continue  # folder markers, and keys that would escape the folder
            target.parent.mkdir(parents=True, exist_ok=True)
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
            tmp = target.with_name(f".{target.name}.part")
            with tmp.open("wb") as fh:
                while chunk := body.read(1 << 20):
                    fh.write(chunk)
            os.replace(tmp, target)
    return snapshot(folder)


def push(url: str, folder: Path, since: Snapshot | None = None, client: Any = None) -> list[str]:
    """Upload the files under ``folder`` that are new or changed since ``since``; return their keys."""
    bucket, prefix = split_url(url)
    client = client or _client()
    before = since or {}
    pushed = []
    for rel, stat in snapshot(folder).items():
        if before.get(rel) == stat or Path(rel).name.startswith("."):
            continue
        key = prefix + rel
        with (folder / rel).open("rb") as fh:
            client.put_object(Bucket=bucket, Key=key, Body=fh)
        pushed.append(key)
    return pushed


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    if "--" not in argv:
        raise BadInput("evals.handoff: the command goes after `--`")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m evals.handoff", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", required=True, help="s3://bucket/prefix of the run folder")
    parser.add_argument("--dir", required=True, type=Path, help="local folder the command sees as the run folder")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        raise BadInput("evals.handoff: no command after `--`")
    split_url(args.prefix)
    return args, command


def main(argv: Sequence[str] | None = None) -> int:
    from evals._cli import configure_logging

    configure_logging()
    try:
        args, command = _parse(sys.argv[1:] if argv is None else argv)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        before = pull(args.prefix, args.dir)
    except Exception as exc:  # noqa: BLE001 - any S3 failure is infrastructure (exit 3), never a verdict
        print(f"error: evals.handoff: cannot pull {args.prefix}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_HANDOFF_FAILED
    log.info("pulled %d file(s) from %s into %s", len(before), args.prefix, args.dir)
    try:
        code = subprocess.call(command)  # noqa: S603 - the pod's own step command
    except OSError as exc:
        print(f"error: evals.handoff: cannot run {command[0]!r}: {exc.strerror}", file=sys.stderr)
        return EXIT_HANDOFF_FAILED
    try:
        pushed = push(args.prefix, args.dir, before)
    except Exception as exc:  # noqa: BLE001 - as for the pull: exit 3, the task retries
        print(f"error: evals.handoff: cannot push to {args.prefix}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_HANDOFF_FAILED
    log.info("pushed %d file(s) to %s; step exit code %d", len(pushed), args.prefix, code)
    return code


if __name__ == "__main__":
    sys.exit(main())
