"""Reading the files a user hands a CLI, once: every refusal is BadInput naming the flag,
the file and, for JSON lines, the line (exit 2 in every CLI).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evals.errors import BadInput

PathLike = str | os.PathLike[str]


def read_text(path: PathLike, flag: str) -> str:
    """The file's text (UTF-8); a missing or unreadable file is bad input."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{flag} {p}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{flag} {p}: is a directory, not a file") from None
    except UnicodeDecodeError:
        raise BadInput(f"{flag} {p}: not UTF-8 text") from None
    except OSError as exc:
        raise BadInput(f"{flag} {p}: cannot read ({exc.strerror})") from None


def read_yaml(path: PathLike, flag: str) -> Any:
    """The file parsed with YAML's safe loader (no tags, no code)."""
    import yaml

    text = read_text(path, flag)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadInput(f"{flag} {Path(path)}: not valid YAML ({' '.join(str(exc).split())})") from None


def read_json(path: PathLike, flag: str) -> Any:
    """The file parsed as one JSON document."""
    text = read_text(path, flag)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{flag} {Path(path)}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def json_lines(path: PathLike, flag: str, expected: str = "a JSON object") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a line that is not a JSON object is bad input.

    ``expected`` says what a line must be, for the message ("an object with user_id and prompt").
    """
    p = Path(path)
    for n, line in enumerate(read_text(p, flag).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{flag} {p} line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise BadInput(f"{flag} {p} line {n}: expected {expected}")
        yield n, obj
