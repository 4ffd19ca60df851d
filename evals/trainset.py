"""``python -m evals.trainset``: a training set and a held-out eval slice from the request log.

    python -m evals.trainset --logs s3://BUCKET/request-logs/MODEL --start 2026-12-01T00:00:00Z \
        --end 2026-12-02T00:00:00Z --output-dir /results/RUN/dataset [--eval-fraction 0.2] \
        [--max-examples 400] [--min-examples 20] [--publish s3://BUCKET/datasets/MODEL]

Reads every row of the window (``evals.requestlog.read_window``: Parquet in S3 or a local
folder), merges feedback into its request, keeps what may teach (``evals.training.dataset``
says which and why), and writes into ``--output-dir``:

- ``train.jsonl``: ``{id, prompt, answer, source}`` for ``python -m evals.train``;
- ``eval.jsonl``: the held-out slice in the quality suite's schema, checked with the suite's
  own Great Expectations checks (``evals.suites.dataset``) before it is kept;
- ``dataset.json``: the dataset's version and sha256 (the lineage's dataset hash), the
  window, the counts and every reason rows were dropped.

With ``--publish`` the three files are also uploaded to ``PREFIX/<version>/``, the
versioned home of the eval slice (``evals.run --dataset`` reads a staged copy).

Exit codes: 0 written, 1 too few examples to train on (``--min-examples``: a check that
failed, nothing written), 2 bad input (a bad window, a missing or corrupt log source,
a bad flag) with one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evals import settings
from evals._cli import exit_with, flag_type
from evals.errors import BadInput, CheckFailed
from evals.results import utc_now, write_json_atomic

log = logging.getLogger("tollgate.trainset")
DEFAULT_POLICY = settings.REPO_ROOT / "evals" / "policies" / "safety.yaml"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evals.trainset", description=__doc__.split("\n\n")[0])
    p.add_argument("--logs", required=True, help="request-log source: s3://BUCKET/request-logs/MODEL or a folder")
    p.add_argument("--start", required=True, help="window start, ISO 8601 (UTC if no zone)")
    p.add_argument("--end", required=True, help="window end (exclusive), ISO 8601")
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--model", default=None, help="only rows of this model name")
    p.add_argument("--policy", default=str(DEFAULT_POLICY), help="safety policy YAML")
    p.add_argument("--eval-fraction", type=flag_type(settings.number(float, minimum=0, maximum=0.5)), default=0.2)
    p.add_argument("--max-examples", type=flag_type(settings.positive_int), default=400)
    p.add_argument("--min-examples", type=flag_type(settings.positive_int), default=20,
                   help="fewer training pairs than this is a failed check (exit 1)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--publish", default=None, help="s3://BUCKET/PREFIX: upload the dataset to PREFIX/<version>/")
    return p


def _window(args: argparse.Namespace) -> tuple[Any, Any]:
    from evals.requestlog import as_utc

    try:
        start, end = as_utc(args.start), as_utc(args.end)
    except BadInput as exc:
        raise BadInput(f"--start/--end: {exc}") from None
    if end <= start:
        raise BadInput(f"--end {args.end} is not after --start {args.start}")
    return start, end


def _read(args: argparse.Namespace, start: Any, end: Any) -> list[dict[str, Any]]:
    from evals import requestlog

    try:
        table = requestlog.read_window(args.logs, start, end, model=args.model)
    except BadInput as exc:
        raise BadInput(f"--logs {args.logs}: {exc}") from None
    except OSError as exc:  # a corrupt or unreadable Parquet file
        raise BadInput(f"--logs {args.logs}: cannot read the request log ({' '.join(str(exc).split())})") from None
    return requestlog.with_feedback(table)


def _publish(prefix: str, version: str, files: dict[str, bytes]) -> str:
    from evals.requestlog import parse_root
    from evals.weights.s3 import s3_client

    root = parse_root(prefix)
    if not root.is_s3:
        raise BadInput(f"--publish {prefix!r} must be s3://BUCKET/PREFIX")
    client = s3_client(max_pool_connections=4)
    for name, body in files.items():
        client.put_object(Bucket=root.bucket, Key=root.key(f"{version}/{name}"), Body=body)
    return root.url(version)


def _check_eval_slice(data: bytes) -> list[str]:
    """The quality suite's own checks (schema, Great Expectations) on the eval slice."""
    import tempfile

    from evals.suites.dataset import load_dataset

    with tempfile.TemporaryDirectory(prefix="tollgate-trainset-") as tmp:
        path = Path(tmp) / "eval.jsonl"
        path.write_bytes(data)
        return load_dataset(path, "quality", flag="eval slice").checks


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from evals.suites.policy import load_policy
    from evals.training import dataset as ds

    policy = load_policy(args.policy)
    start, end = _window(args)
    started = utc_now()
    pairs, report = ds.select(_read(args, start, end), policy)
    train, held = ds.split(pairs, args.eval_fraction, args.seed, args.max_examples)
    log.info("request log %s [%s, %s): %d rows, %d requests, %d usable pairs -> %d train, %d held out; dropped %s",
             args.logs, start.isoformat(), end.isoformat(), report.rows, report.requests, report.kept, len(train),
             len(held), dict(report.dropped))
    if len(train) < args.min_examples:
        raise CheckFailed(f"only {len(train)} training pairs in the window (--min-examples {args.min_examples}); "
                          f"dropped: {dict(report.dropped) or 'none'}")
    train_bytes = ds.jsonl(p.train_line() for p in train)
    eval_bytes = ds.jsonl(p.quality_item() for p in held)
    sha = ds.dataset_sha256(train_bytes, eval_bytes)
    version = f"{args.model or 'traffic'}-{start:%Y%m%dT%H%M}-{sha[:12]}"
    checks = _check_eval_slice(eval_bytes) if held else []  # before anything is written
    out: Path = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.jsonl").write_bytes(train_bytes)
    (out / "eval.jsonl").write_bytes(eval_bytes)
    meta = {"name": "retrain", "version": version, "sha256": sha, "logs": args.logs, "model": args.model,
            "window": {"start": start.isoformat(), "end": end.isoformat()}, "eval_fraction": args.eval_fraction,
            "seed": args.seed, "train_examples": len(train), "eval_examples": len(held),
            "train_sha256": ds.hashlib.sha256(train_bytes).hexdigest(),
            "eval_sha256": ds.hashlib.sha256(eval_bytes).hexdigest(), "eval_expectations": checks,
            "policy": str(args.policy), "report": report.to_dict(), "started_utc": started, "finished_utc": utc_now()}
    if args.publish:
        meta["published"] = _publish(args.publish, version, {"train.jsonl": train_bytes, "eval.jsonl": eval_bytes,
                                                             "dataset.json": ds.jsonl([meta])})
    write_json_atomic(out / "dataset.json", meta)
    print(f"dataset {version}: {len(train)} train, {len(held)} held out, sha256 {sha}")
    return 0


if __name__ == "__main__":
    exit_with(main)
