"""The request log: one Parquet schema, one key layout, a writer and a window reader.

The gateway writes one row per request (``kind="request"``) and one per feedback
(``kind="feedback"``, carrying the ``request_id`` it is about and the feedback
columns); drift detection and retraining read them back by time window. Everyone
agrees on three things, all defined here:

- :data:`SCHEMA`, the pyarrow schema of every file (docs/ARCHITECTURE.md, "request log");
- the layout ``ROOT/request-logs/MODEL/dt=YYYY-MM-DD/hour=HH/<utc-ts>-<uuid>.parquet``, where
  ROOT is ``s3://BUCKET`` (optionally with a prefix) or a local folder, and MODEL is the model
  name with anything outside ``[A-Za-z0-9._-]`` replaced by ``_``;
- the hour partition is the UTC hour of the row's ``ts``.

    write_table(rows, "s3://tollgate")              # -> the URLs written (one file per model and hour)
    read_window("s3://tollgate", start, end)         # -> pyarrow.Table of rows with start <= ts < end

boto3/botocore is imported inside the functions that talk to S3 (through the project's
adapter, :mod:`evals.weights.s3`: endpoint, credentials, timeouts and retries from the
environment), so importing this module costs pyarrow only.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from evals.errors import BadInput

if TYPE_CHECKING:
    from botocore.client import BaseClient

LOG_DIR = "request-logs"
KINDS = ("request", "feedback")

SCHEMA = pa.schema([
    pa.field("kind", pa.string(), nullable=False),
    pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("user_hash", pa.string()),
    pa.field("model", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("arm", pa.string()),
    pa.field("endpoint", pa.string()),
    pa.field("stream", pa.bool_()),
    pa.field("status", pa.int32()),
    pa.field("error_type", pa.string()),
    pa.field("prompt_tokens", pa.int32()),
    pa.field("output_tokens", pa.int32()),
    pa.field("ttft_s", pa.float64()),
    pa.field("duration_s", pa.float64()),
    pa.field("prompt_text", pa.string()),
    pa.field("output_text", pa.string()),
    pa.field("redacted", pa.bool_()),
    pa.field("guardrail_hits", pa.list_(pa.string())),
    pa.field("refusal", pa.bool_()),
    pa.field("fallback", pa.bool_()),
    pa.field("finish_reason", pa.string()),
    pa.field("language", pa.string()),
    pa.field("topic", pa.string()),
    pa.field("feedback_score", pa.float64()),
    pa.field("feedback_label", pa.string()),
    pa.field("reference", pa.string()),
])

COLUMNS = tuple(SCHEMA.names)
_DEFAULTS: dict[str, Any] = {"guardrail_hits": []}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_PARTITION = re.compile(r"/dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/")


def model_dir_name(model: str | None) -> str:
    """The MODEL folder of a model name (``smollm2-orders:1`` -> ``smollm2-orders_1``)."""
    return _UNSAFE.sub("_", model or "") or "_unknown"


def as_utc(ts: datetime | float | int | str) -> datetime:
    """A row's time as an aware UTC datetime: datetimes (naive = UTC), epoch seconds or ISO 8601."""
    if isinstance(ts, datetime):
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        return datetime.fromtimestamp(float(ts), UTC)
    if isinstance(ts, str):
        try:
            return as_utc(datetime.fromisoformat(ts))
        except ValueError:
            pass
    raise BadInput(f"request log: ts {ts!r} is not a datetime, epoch seconds or ISO 8601 time")


def relative_key(model: str | None, ts: datetime, *, token: str | None = None) -> str:
    """``request-logs/MODEL/dt=.../hour=HH/<utc-ts>-<uuid>.parquet`` for a batch whose first row is at ``ts``."""
    t = as_utc(ts)
    stamp = t.strftime("%Y%m%dT%H%M%S") + f"{t.microsecond:06d}Z"
    return (f"{LOG_DIR}/{model_dir_name(model)}/dt={t:%Y-%m-%d}/hour={t:%H}/"
            f"{stamp}-{token or uuid.uuid4().hex}.parquet")


def normalise_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One row with every column (missing -> null, or [] for guardrail_hits); unknown keys are bad input."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise BadInput(f"request log: unknown column(s) {', '.join(sorted(unknown))}")
    kind = row.get("kind")
    if kind not in KINDS:
        raise BadInput(f"request log: kind {kind!r} must be one of {', '.join(KINDS)}")
    if not row.get("request_id"):
        raise BadInput("request log: request_id is required")
    out = {c: row.get(c, _DEFAULTS.get(c)) for c in COLUMNS}
    ts = row.get("ts")
    out["ts"] = as_utc(ts if ts is not None else datetime.now(UTC))
    if out["guardrail_hits"] is None:
        out["guardrail_hits"] = []
    return out


def to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts) as a table of :data:`SCHEMA`; a value of the wrong type is bad input naming the column."""
    normal = [normalise_row(r) for r in rows]
    arrays = []
    for f in SCHEMA:
        values = [r[f.name] for r in normal]
        try:
            arrays.append(pa.array(values, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise BadInput(f"request log: column {f.name}: {exc}") from None
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


@dataclass(frozen=True)
class Root:
    """Where logs live: an S3 bucket and key prefix, or a local folder."""

    bucket: str | None
    prefix: str  # S3: key prefix without trailing slash ("" = bucket root); local: the folder

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    def url(self, rel: str) -> str:
        if self.bucket is not None:
            return f"s3://{self.bucket}/{self.key(rel)}"
        return str(Path(self.prefix) / rel)

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel


def parse_root(dest: str | Path) -> Root:
    """``s3://BUCKET[/PREFIX]`` or a local path."""
    text = str(dest)
    if text.startswith("s3://"):
        bucket, _, prefix = text[5:].partition("/")
        if not bucket:
            raise BadInput(f"request log location {text!r} has no bucket (s3://BUCKET[/PREFIX])")
        return Root(bucket, prefix.strip("/"))
    if "://" in text:
        raise BadInput(f"request log location {text!r} is neither s3://BUCKET[/PREFIX] nor a local folder")
    return Root(None, text)


def _client(client: BaseClient | None) -> BaseClient:
    if client is not None:
        return client
    from evals.weights.s3 import s3_client

    return s3_client(max_pool_connections=4)


def batches(rows: Iterable[Mapping[str, Any]]) -> Iterator[tuple[str, datetime, pa.Table]]:
    """Rows grouped into one table per (model, UTC hour): (model, first ts, table)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        n = normalise_row(r)
        groups.setdefault((model_dir_name(n["model"]), n["ts"].strftime("%Y%m%d%H")), []).append(n)
    for (_, _), group in sorted(groups.items()):
        group.sort(key=lambda r: r["ts"])
        yield group[0]["model"], group[0]["ts"], to_table(group)


def write_table(rows: Iterable[Mapping[str, Any]], dest: str | Path | None = None, *,
                client: BaseClient | None = None) -> list[str]:
    """Write rows as Parquet files (one per model and hour) under ``dest``; return their URLs/paths.

    ``dest`` defaults to ``s3://$TOLLGATE_S3_BUCKET``. Local files are written to a temporary
    name and renamed, so a reader never sees half a file; S3 objects appear whole by nature.
    """
    if dest is None:
        from evals import settings

        dest = f"s3://{settings.current().s3_bucket}"
    root = parse_root(dest)
    written: list[str] = []
    for model, first_ts, table in batches(rows):
        rel = relative_key(model, first_ts)
        data = parquet_bytes(table)
        if root.is_s3:
            s3 = client = _client(client)
            s3.put_object(Bucket=root.bucket, Key=root.key(rel), Body=data,
                          ContentType="application/vnd.apache.parquet")
        else:
            write_local(Path(root.prefix) / rel, data)
        written.append(root.url(rel))
    return written


def write_local(path: Path, data: bytes) -> None:
    """Atomically place ``data`` at ``path`` (tmp + fsync + rename)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _hours(start: datetime, end: datetime) -> set[tuple[str, str]]:
    """Every (dt, hour) partition that can hold a row in [start, end)."""
    out: set[tuple[str, str]] = set()
    t = start.replace(minute=0, second=0, microsecond=0)
    while t < end:
        out.add((t.strftime("%Y-%m-%d"), t.strftime("%H")))
        t += timedelta(hours=1)
    return out


def _in_window(name: str, hours: set[tuple[str, str]]) -> bool:
    m = _PARTITION.search("/" + name.replace("\\", "/"))
    return m is None or (m.group(1), m.group(2)) in hours


def _local_files(base: Path, hours: set[tuple[str, str]]) -> list[Path]:
    if base.is_file():
        return [base]
    if not base.is_dir():
        raise BadInput(f"request log source {str(base)!r} is neither a folder nor a Parquet file")
    return sorted(p for p in base.rglob("*.parquet")
                  if not p.name.startswith(".") and _in_window(str(p.relative_to(base)), hours))


def _s3_tables(root: Root, hours: set[tuple[str, str]], client: BaseClient | None) -> list[pa.Table]:
    s3 = _client(client)
    prefix = root.prefix
    if prefix and not prefix.endswith(".parquet"):
        prefix += "/"
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=root.bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", ()) if o["Key"].endswith(".parquet")
                 and _in_window(o["Key"], hours)]
    tables = []
    for key in sorted(keys):
        body = s3.get_object(Bucket=root.bucket, Key=key)["Body"].read()
        tables.append(pq.read_table(io.BytesIO(body), schema=SCHEMA))
    return tables


def read_window(source: str | Path, start: datetime | float | str, end: datetime | float | str, *,
                kind: str | None = None, model: str | None = None,
                client: BaseClient | None = None) -> pa.Table:
    """Every row with ``start <= ts < end`` under ``source`` (s3:// prefix, local folder or one file).

    Only the hour partitions that overlap the window are read. ``kind`` and ``model`` filter
    further. An empty window is an empty table of :data:`SCHEMA`, not an error.
    """
    import pyarrow.compute as pc

    lo, hi = as_utc(start), as_utc(end)
    if hi <= lo:
        raise BadInput(f"request log window: end {hi.isoformat()} is not after start {lo.isoformat()}")
    hours = _hours(lo, hi)
    root = parse_root(source)
    if root.is_s3:
        tables = _s3_tables(root, hours, client)
    else:
        tables = [pq.read_table(p, schema=SCHEMA) for p in _local_files(Path(root.prefix), hours)]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    mask = pc.and_(pc.greater_equal(table["ts"], pa.scalar(lo, SCHEMA.field("ts").type)),
                   pc.less(table["ts"], pa.scalar(hi, SCHEMA.field("ts").type)))
    if kind is not None:
        mask = pc.and_(mask, pc.equal(table["kind"], kind))
    if model is not None:
        mask = pc.and_(mask, pc.equal(table["model"], model))
    return table.filter(mask).sort_by("ts")


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """A table as a list of row dicts (for small windows and tests)."""
    out: list[dict[str, Any]] = table.to_pylist()
    return out


def with_feedback(table: pa.Table) -> list[dict[str, Any]]:
    """Request rows with the latest feedback for each request id merged in (feedback_* and reference)."""
    latest: dict[str, dict[str, Any]] = {}
    import pyarrow.compute as pc

    for r in rows(table.filter(pc.equal(table["kind"], "feedback"))):
        latest[r["request_id"]] = r
    merged = []
    for r in rows(table.filter(pc.equal(table["kind"], "request"))):
        fb = latest.get(r["request_id"])
        if fb is not None:
            r = {**r, **{k: fb[k] for k in ("feedback_score", "feedback_label", "reference")}}
        merged.append(r)
    return merged


__all__: Sequence[str] = ("COLUMNS", "KINDS", "LOG_DIR", "SCHEMA", "as_utc", "batches", "model_dir_name",
                          "normalise_row", "parquet_bytes", "parse_root", "read_window", "relative_key", "rows",
                          "to_table", "with_feedback", "write_local", "write_table")
