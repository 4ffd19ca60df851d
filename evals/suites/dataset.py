"""Evaluation datasets: JSONL parsing, schema checks with Great Expectations, provenance.

A dataset is refused (BadInput, exit 2) when a line is not a JSON object, a required
field is missing or has the wrong type, a prompt is empty, an id repeats, or a label is
outside its set; the message names the file and the first offending line.
"""

from __future__ import annotations

import logging
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evals import inputs
from evals.errors import BadInput
from evals.results import sha256_file

log = logging.getLogger("tollgate.dataset")

DATASETS_DIR = Path(__file__).resolve().parent.parent / "datasets"
SCHEMA_PATH = DATASETS_DIR / "schema.yaml"
VERSION_PATH = DATASETS_DIR / "VERSION"
_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "number": (int, float), "list": (list,), "bool": (bool,)}


@dataclass
class Dataset:
    path: Path
    suite: str
    items: list[dict[str, Any]]
    lines: list[int]  # source line of each item
    sha256: str
    version: str
    checks: list[str] = field(default_factory=list)  # the expectations that passed

    def provenance(self) -> dict[str, Any]:
        return {"path": _display_path(self.path), "sha256": self.sha256, "version": self.version,
                "items": len(self.items), "expectations": self.checks}


def _display_path(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(DATASETS_DIR.parent.parent))
    except ValueError:
        return str(p)


def default_dataset(suite: str) -> Path:
    return DATASETS_DIR / f"{suite}.jsonl"


def load_schema(suite: str) -> dict[str, Any]:
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    try:
        return schema["suites"][suite]
    except (KeyError, TypeError):
        raise BadInput(f"{SCHEMA_PATH}: no schema for suite {suite!r}") from None


def parse_jsonl(path: Path, flag: str = "--dataset") -> tuple[list[dict[str, Any]], list[int]]:
    """Objects and their line numbers; blank lines are skipped, anything else must be an object."""
    items, lines = [], []
    for n, obj in inputs.json_lines(path, flag):
        items.append(obj)
        lines.append(n)
    if not items:
        raise BadInput(f"{flag} {path}: dataset is empty")
    return items, lines


def _row_checks(path: Path, suite: str, schema: dict[str, Any], items: list[dict], lines: list[int], flag: str) -> None:
    """Checks that need Python: types, and per-row rules that depend on other fields."""
    types = schema.get("types", {})
    for item, line in zip(items, lines, strict=True):
        where = f"{flag} {path} line {line}"
        for key, tname in types.items():
            if key in item and item[key] is not None and (
                not isinstance(item[key], _TYPES[tname]) or isinstance(item[key], bool) and tname != "bool"
            ):
                raise BadInput(f"{where}: field {key!r} must be {tname}")
        if suite == "quality":
            if item.get("scorer") == "regex":
                if not item.get("pattern"):
                    raise BadInput(f"{where}: scorer 'regex' needs a 'pattern'")
                try:
                    re.compile(item["pattern"])
                except re.error as exc:
                    raise BadInput(f"{where}: invalid pattern ({exc})") from None
            rule = schema.get("needs_contexts") or {}
            if all(item.get(k) == v for k, v in rule.items()) and rule:
                ctx = item.get("contexts")
                if not ctx or not all(isinstance(c, str) and c.strip() for c in ctx):
                    raise BadInput(f"{where}: a {rule} item needs non-empty 'contexts'")


def validate_with_great_expectations(path: Path, schema: dict[str, Any], items: list[dict], lines: list[int],
                                     flag: str = "--dataset") -> list[str]:
    """Run the schema's expectations on the dataset; raise BadInput at the first failing line."""
    # No analytics posts from a pod; set before the import reads it.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import pandas as pd

    # GE configures its own loggers on import; its INFO lines (temp docs site, ...) are noise here
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)

    df = pd.DataFrame(items)
    df["_line"] = lines
    expectations: list[tuple[str, Any]] = []
    for col in schema.get("required", []):
        if col not in df.columns:
            raise BadInput(f"{flag} {path} line {lines[0]}: required field {col!r} is missing")
        expectations.append((f"{col} not null", gx.expectations.ExpectColumnValuesToNotBeNull(column=col)))
    for col in schema.get("non_empty", []):
        expectations.append((f"{col} not blank",
                             gx.expectations.ExpectColumnValuesToMatchRegex(column=col, regex=r"\S")))
    for col in schema.get("unique", []):
        expectations.append((f"{col} unique", gx.expectations.ExpectColumnValuesToBeUnique(column=col)))
    for col, allowed in (schema.get("labels") or {}).items():
        expectations.append((f"{col} in {allowed}",
                             gx.expectations.ExpectColumnValuesToBeInSet(column=col, value_set=list(allowed))))

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(name="tollgate_dataset")
    asset = source.add_dataframe_asset(name=path.stem)
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df})
    passed = []
    for label, expectation in expectations:
        result = batch.validate(expectation, result_format={"result_format": "COMPLETE"})
        if result.success:
            passed.append(label)
            continue
        idx = (result.result or {}).get("unexpected_index_list") or []
        # for a uniqueness failure name the repeat, not the first occurrence
        first = (idx[1] if label.endswith(" unique") and len(idx) > 1 else idx[0]) if idx else None
        if isinstance(first, dict):  # GE may report {"index": n} rows
            first = first.get("index")
        line = int(df["_line"].iloc[int(first)]) if first is not None else lines[0]
        col = getattr(expectation, "column", "?")
        value = df[col].iloc[int(first)] if first is not None and col in df.columns else None
        raise BadInput(f"{flag} {path} line {line}: expectation '{label}' failed (value {value!r})")
    return passed


def load_dataset(path: str | Path, suite: str, flag: str = "--dataset") -> Dataset:
    """Parse, check and fingerprint a dataset. Any failure is BadInput naming file and line."""
    p = Path(path)
    schema = load_schema(suite)
    items, lines = parse_jsonl(p, flag)
    for item, line in zip(items, lines, strict=True):
        missing = [k for k in schema.get("required", []) if k not in item]
        if missing:
            raise BadInput(f"{flag} {p} line {line}: missing required field(s) {missing}")
    _row_checks(p, suite, schema, items, lines, flag)
    checks = validate_with_great_expectations(p, schema, items, lines, flag)
    version = VERSION_PATH.read_text().strip() if p.resolve().parent == DATASETS_DIR and VERSION_PATH.exists() else "external"
    return Dataset(path=p, suite=suite, items=items, lines=lines, sha256=sha256_file(p), version=version, checks=checks)


def select_items(items: list[dict[str, Any]], limit: int | None, seed: int, group_key: str) -> list[dict[str, Any]]:
    """`limit` items, spread over the groups (task/category) so a small run still covers each.

    Deterministic for a given seed: shuffle within each group, then take round-robin.
    """
    if limit is None or limit >= len(items):
        return list(items)
    rng = random.Random(seed)
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault(str(item.get(group_key)), []).append(item)
    for members in groups.values():
        rng.shuffle(members)
    picked: list[dict[str, Any]] = []
    queues = [list(g) for _, g in sorted(groups.items())]
    while len(picked) < limit:
        for q in queues:
            if q and len(picked) < limit:
                picked.append(q.pop(0))
    return picked
