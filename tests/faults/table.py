"""Render the fault matrix as docs/FAILURES.md: ``python -m tests.faults.table [--check]``.

The file is generated so that it cannot drift from the tests; test_failures_doc.py fails
when the committed file differs from what this prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.faults.matrix import GROUPS, by_group

DOC = Path(__file__).resolve().parents[2] / "docs" / "FAILURES.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    groups = by_group()
    total = sum(len(rows) for rows in groups.values())
    lines = [
        "# What Tollgate survives: the failure table",
        "",
        "Generated from `tests/faults/matrix.py` by `python -m tests.faults.table`; do not edit by hand",
        "(`tests/faults/test_failures_doc.py` fails when this file and the matrix differ). Every row is a",
        "test in `./tollgate test` that injects the fault into the named component and asserts, besides",
        "what the row says: **no wrong promotion** (the alias is what it was, or what a fully passed run",
        "set), **nothing half-staged visible**, **no record lost** (every started promotion has an ending",
        "audit record), **no secret in any log** the case produced.",
        "",
        f"{total} cases: " + ", ".join(f"{GROUPS[g]} {len(rows)}" for g, rows in groups.items() if rows) + ".",
        "",
    ]
    for group, rows in groups.items():
        if not rows:
            continue
        lines += [f"## {GROUPS[group]}", "", "| Case | Injected where | Injected what | Tollgate does | Real part |",
                  "|---|---|---|---|---|"]
        lines += [f"| `{c.id}` | {_cell(c.where)} | {_cell(c.inject)} | {_cell(c.holds)} | {_cell(c.real)} |"
                  for c in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.is_file() or DOC.read_text() != text:
            print(f"{DOC} is out of date: run python -m tests.faults.table --write", file=sys.stderr)
            return 1
        return 0
    if "--write" in argv:
        DOC.write_text(text)
        print(f"wrote {DOC}")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
