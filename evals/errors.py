"""The project's exception types and its exit codes (docs/ARCHITECTURE.md, "Command lines").

Exit codes: 0 pass, 1 a gate or check failed, 2 bad input.
"""

from __future__ import annotations

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_BAD_INPUT = 2


class TollgateError(Exception):
    """Base class: every error the project raises on purpose."""

    exit_code = EXIT_FAIL


class BadInput(TollgateError):
    """The caller gave us something we cannot use: a file, field or flag.

    The message is one line and names the file, field or flag; the CLI prints it
    to stderr and exits 2 without side effects.
    """

    exit_code = EXIT_BAD_INPUT


class CheckFailed(TollgateError):
    """A gate, verification or check ran and did not pass (exit 1)."""

    exit_code = EXIT_FAIL


class PortInUse(BadInput):
    """A server cannot start because its port is taken."""

    def __init__(self, host: str, port: int, env_var: str | None, what: str) -> None:
        hint = f"; set {env_var} to another port" if env_var else ""
        super().__init__(f"port {host}:{port} for {what} is already in use{hint}")
        self.port = port
