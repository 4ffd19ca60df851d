"""Reading a window of the request log for drift: every Parquet file under a source.

Why not ``evals.requestlog.read_window`` alone: it reads every file *as* the contract
schema, so a file written by a gateway with another schema raises deep in pyarrow. Drift
must say which file changed and how (a failed schema check, not a crash), and name a
corrupt file (bad input). Each file is read with its own schema; differences are
collected as :class:`SchemaIssue` (the checks turn them into a failed check), the rest is
cast to the contract schema and concatenated.

A source is an ``s3://BUCKET/PREFIX``, a local folder (searched recursively) or one
Parquet file. Hour partitions outside ``[start, end)`` are skipped without being read
(the layout of evals.requestlog), rows are then filtered by ``ts``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from evals import requestlog
from evals.errors import BadInput


@dataclass(frozen=True)
class SchemaIssue:
    file: str
    column: str
    problem: str  # "missing" | "type TYPE, expected TYPE"

    def __str__(self) -> str:
        return f"{self.file}: column {self.column} {self.problem}"


@dataclass
class Window:
    """One window: its rows (contract schema), where they came from, what did not fit."""

    source: str
    table: pa.Table
    files: list[str] = field(default_factory=list)
    schema_issues: list[SchemaIssue] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)


def _conform(table: pa.Table, name: str) -> tuple[pa.Table, list[SchemaIssue]]:
    """``table`` cast to requestlog.SCHEMA; missing or mistyped columns become nulls plus an issue."""
    issues: list[SchemaIssue] = []
    arrays = []
    for f in requestlog.SCHEMA:
        if f.name not in table.column_names:
            issues.append(SchemaIssue(name, f.name, "missing"))
            arrays.append(pa.nulls(table.num_rows, f.type))
            continue
        col = table[f.name]
        if col.type != f.type:
            try:
                col = col.cast(f.type, safe=True)
                if not (pa.types.is_integer(f.type) and pa.types.is_integer(table[f.name].type)):
                    issues.append(SchemaIssue(name, f.name, f"type {table[f.name].type}, expected {f.type}"))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                issues.append(SchemaIssue(name, f.name, f"type {table[f.name].type}, expected {f.type}"))
                col = pa.nulls(table.num_rows, f.type)
        arrays.append(col)
    out = pa.Table.from_arrays(arrays, schema=requestlog.SCHEMA.with_metadata(None))
    return out, issues


def _read_parquet(data: Any, name: str) -> pa.Table:
    try:
        return pq.read_table(data)
    except (pa.ArrowInvalid, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(f"{name}: not a readable Parquet file ({first})") from None


def _local(base: Path, hours: set[tuple[str, str]] | None, flag: str) -> list[tuple[str, pa.Table]]:
    if base.is_file():
        return [(str(base), _read_parquet(base, f"{flag} {base}"))]
    if not base.is_dir():
        raise BadInput(f"{flag} {str(base)!r}: no such folder or Parquet file")
    paths = sorted(p for p in base.rglob("*.parquet") if not p.name.startswith("."))
    if hours is not None:
        paths = [p for p in paths if requestlog._in_window(str(p.relative_to(base)), hours)]  # noqa: SLF001
    return [(str(p), _read_parquet(p, f"{flag} {p}")) for p in paths]


def _s3(url: str, hours: set[tuple[str, str]] | None, flag: str, client: Any) -> list[tuple[str, pa.Table]]:
    root = requestlog.parse_root(url)
    if client is None:
        from evals.weights.s3 import s3_client

        client = s3_client(max_pool_connections=4)
    prefix = root.prefix + "/" if root.prefix and not root.prefix.endswith(".parquet") else root.prefix
    from evals.weights.s3 import translate

    try:
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=root.bucket, Prefix=prefix)
                for o in page.get("Contents", ()) if o["Key"].endswith(".parquet")]
    except Exception as exc:  # noqa: BLE001 - botocore's errors: one line naming the flag
        raise BadInput(f"{flag} {url}: cannot list ({translate(exc, url)})") from None
    if not keys:
        raise BadInput(f"{flag} {url}: no Parquet files under this S3 prefix (does it exist?)")
    if hours is not None:
        keys = [k for k in keys if requestlog._in_window(k, hours)]  # noqa: SLF001
    out = []
    for key in sorted(keys):
        body = client.get_object(Bucket=root.bucket, Key=key)["Body"].read()
        out.append((f"s3://{root.bucket}/{key}", _read_parquet(io.BytesIO(body), f"{flag} s3://{root.bucket}/{key}")))
    return out


def read_source(source: str, *, start: datetime | None = None, end: datetime | None = None,
                flag: str = "--current", client: Any = None) -> Window:
    """Every request-log row of ``source`` (``start <= ts < end`` when given)."""
    import pyarrow.compute as pc

    hours = requestlog._hours(start, end) if start is not None and end is not None else None  # noqa: SLF001
    if "://" in source and not source.startswith("s3://"):
        raise BadInput(f"{flag} {source!r}: expected s3://BUCKET/PREFIX, a folder or a Parquet file")
    parts = _s3(source, hours, flag, client) if source.startswith("s3://") else _local(Path(source), hours, flag)
    tables, issues = [], []
    for name, raw in parts:
        t, problems = _conform(raw, name)
        tables.append(t)
        issues += problems
    table = pa.concat_tables(tables) if tables else requestlog.SCHEMA.with_metadata(None).empty_table()
    ts_type = requestlog.SCHEMA.field("ts").type
    if start is not None:
        table = table.filter(pc.greater_equal(table["ts"], pa.scalar(requestlog.as_utc(start), ts_type)))
    if end is not None:
        table = table.filter(pc.less(table["ts"], pa.scalar(requestlog.as_utc(end), ts_type)))
    return Window(source=source, table=table, files=[n for n, _ in parts], schema_issues=issues)
