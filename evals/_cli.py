"""Shared command-line plumbing: logging setup and the exit-code contract."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from evals.errors import EXIT_BAD_INPUT, BadInput, TollgateError


class _ArgParseExit(Exception):
    pass


def configure_logging() -> None:
    from evals import settings

    logging.basicConfig(
        level=getattr(logging, settings.current().log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )


def flag_type(parse: Callable[[str, str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=`` from one of evals.settings' parsers (``settings.positive_float``, ...):
    the same rules for a flag as for its environment variable; argparse names the flag (exit 2)."""

    def convert(raw: str) -> Any:
        try:
            return parse("", raw)
        except BadInput as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a CLI main, mapping project errors to exit codes and one-line messages.

    argparse already exits 2 on bad flags; we keep that. A TollgateError prints
    `error: <message>` on one line and exits with the error's code. Anything
    unexpected is a failure (exit 1) with a traceback in the log: it must never
    look like a pass.
    """
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    # `python -m evals.canary` runs the package's __main__: name it by the package, as the contract does.
    prog = main_spec.name.removesuffix(".__main__") if main_spec is not None else (
        os.path.basename(sys.argv[0]) if sys.argv else "tollgate")
    try:
        configure_logging()  # inside: a bad TOLLGATE_* value is bad input like any other
        return main(argv)
    except TollgateError as exc:
        msg = " ".join(str(exc).split())
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return exc.exit_code if exc.exit_code is not None else 1  # never 0 for an error
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - last resort: fail closed, never exit 0
        logging.getLogger("tollgate").exception("unexpected failure")
        return 1


def exit_with(main: Callable[[Sequence[str] | None], int]) -> None:
    sys.exit(run_main(main))


__all__ = ["EXIT_BAD_INPUT", "configure_logging", "exit_with", "flag_type", "run_main"]
