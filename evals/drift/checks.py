"""Data checks on a window before any statistic: a broken window is a failed check, not drift.

Two layers, because they see different things:

- Arrow-level checks on every row (exact, milliseconds): the schema the files were written
  with (evals.drift.source reports missing and mistyped columns per file), NaN and
  infinite values (pandas, and so Great Expectations, folds NaN into "null"), request rows
  present at all.
- Great Expectations 1.x (ephemeral context, pandas data source) on the request rows: the
  row count, nulls in required columns, ranges (tokens >= 0, durations in [0, 1 day),
  HTTP status in [100, 599], feedback scores finite and bounded), allowed values (kind,
  arm) and at least two distinct values in the continuous columns a gateway always
  varies (prompt_tokens, duration_s): a window where every duration is identical is a
  broken logger, not a stable service.

GX is not the bottleneck once imported (10-20 s on this shared machine): 0.9 s for a
200k-row sample and 2.6 s for all of a 1M-row window (benchmarks/DRIFT.md). Windows above
``gx_max_rows`` (default 1M) are validated on a deterministic, evenly spaced sample of that
many request rows; the Arrow layer still sees every row. The result says how many GX saw.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evals.drift.source import Window

log = logging.getLogger("tollgate.drift")

REQUIRED = ("request_id", "ts", "status", "prompt_tokens", "output_tokens", "duration_s")
FLOAT_COLUMNS = ("ttft_s", "duration_s", "feedback_score")
RANGES: dict[str, tuple[float, float]] = {
    "prompt_tokens": (0, 10_000_000), "output_tokens": (0, 10_000_000), "duration_s": (0, 86_400),
    "ttft_s": (0, 86_400), "status": (100, 599), "feedback_score": (-1_000, 1_000),
}
VARYING = ("prompt_tokens", "duration_s")
GX_MAX_ROWS = 1_000_000


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class WindowChecks:
    window: str  # "reference" | "current"
    rows: int
    checks: list[Check] = field(default_factory=list)
    gx_rows: int = 0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[str]:
        return [f"{self.window}: {c.name}: {c.detail}" for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window, "rows": self.rows, "passed": self.passed, "gx_rows": self.gx_rows,
                "checks": [asdict(c) for c in self.checks]}


def arrow_checks(window: Window, requests: pa.Table, min_rows: int) -> list[Check]:
    out = []
    issues = window.schema_issues
    shown = "; ".join(str(i) for i in issues[:3]) + (f" (+{len(issues) - 3} more)" if len(issues) > 3 else "")
    out.append(Check("schema", not issues, shown or f"{len(window.files)} file(s) match evals.requestlog.SCHEMA"))
    out.append(Check("min_rows", requests.num_rows >= min_rows,
                     f"{requests.num_rows} request rows (minimum {min_rows})"))
    bad = []
    for name in FLOAT_COLUMNS:
        values = pc.drop_null(requests[name]).to_numpy(zero_copy_only=False)
        n_nan = int(np.isnan(values).sum())
        n_inf = int(np.isinf(values).sum())
        if n_nan or n_inf:
            bad.append(f"{name}: {n_nan} NaN, {n_inf} infinite")
    out.append(Check("finite", not bad, "; ".join(bad) or "no NaN or infinite values"))
    return out


def _expectations(min_rows: int) -> list[Any]:
    import great_expectations.expectations as gxe

    exps: list[Any] = [gxe.ExpectTableRowCountToBeBetween(min_value=min_rows)]
    exps += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in REQUIRED]
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=lo, max_value=hi) for c, (lo, hi) in RANGES.items()]
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="arm", value_set=["stable", "canary"]))
    exps += [gxe.ExpectColumnUniqueValueCountToBeBetween(column=c, min_value=2) for c in VARYING]
    return exps


def _frame(requests: pa.Table, max_rows: int) -> Any:
    cols = sorted(set(REQUIRED) | set(RANGES) | {"arm"})
    table = requests.select(cols)
    if table.num_rows > max_rows:
        idx = np.linspace(0, table.num_rows - 1, max_rows).astype(np.int64)
        table = table.take(pa.array(idx))
    return table.to_pandas()


def _describe(res: Any) -> str:
    cfg = res.expectation_config
    kw = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
    result = res.result or {}
    seen = result.get("unexpected_count", result.get("observed_value"))
    return f"{cfg.type} {kw} failed (observed/unexpected: {seen})"


def gx_checks(requests: pa.Table, min_rows: int, max_rows: int = GX_MAX_ROWS) -> tuple[Check, int]:
    """One Check for the whole Great Expectations suite (its failures listed), and the rows it saw."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    df = _frame(requests, max_rows)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # no bars in a pod's log
    asset = ctx.data_sources.add_pandas("drift").add_dataframe_asset("window")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df})
    suite = gx.ExpectationSuite(name="drift-window")
    sampled = len(df) < requests.num_rows
    for exp in _expectations(min(min_rows, len(df)) if sampled else min_rows):
        suite.add_expectation(exp)
    result = batch.validate(suite)
    failed = [_describe(r) for r in result.results if not r.success]
    detail = "; ".join(failed) if failed else f"{len(result.results)} expectations passed"
    return Check("great_expectations", not failed, detail), len(df)


def check_window(window: Window, name: str, min_rows: int, *, use_gx: bool = True,
                 gx_max_rows: int = GX_MAX_ROWS) -> WindowChecks:
    requests = window.table.filter(pc.equal(window.table["kind"], "request"))
    wc = WindowChecks(window=name, rows=int(requests.num_rows))
    wc.checks = arrow_checks(window, requests, min_rows)
    if use_gx and requests.num_rows > 0:
        check, seen = gx_checks(requests, min_rows, gx_max_rows)
        wc.checks.append(check)
        wc.gx_rows = seen
    return wc
