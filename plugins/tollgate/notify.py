"""Tell people: a small notifier interface, a JSON-lines file (and the log), and a Slack-compatible webhook.

Every canary abort, rollback and promotion calls :func:`notify`. The file notifier is the
embedded default (``$TOLLGATE_HOME/notifications.jsonl``; ``TOLLGATE_NOTIFIER=log`` keeps
the log only); ``TOLLGATE_NOTIFY_WEBHOOK`` adds a webhook that receives Slack's incoming
webhook payload (``{"text": ..., "blocks": [...]}``; Mattermost and Teams' Slack-compatible
endpoints take it too). A notifier that fails (bad URL, unreachable, HTTP error, timeout)
is logged and never changes the outcome of what it reports: :func:`notify` does not raise.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("tollgate.notify")


@dataclass(frozen=True)
class Event:
    kind: str  # promoted | canary_aborted | rolled_back | nightly | ...
    subject: str
    lines: tuple[str, ...]
    context: dict[str, Any]

    def text(self) -> str:
        return "\n".join([f"*{self.subject}*", *(f"- {ln}" for ln in self.lines)])


class Notifier(Protocol):
    def send(self, event: Event) -> None: ...


class LogNotifier:
    def send(self, event: Event) -> None:
        log.warning("%s: %s", event.subject, "; ".join(event.lines))


class FileNotifier:
    """One JSON object per line: what the tests and a person tailing the file read."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def send(self, event: Event) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps({"kind": event.kind, "subject": event.subject, "lines": list(event.lines),
                                 **event.context}, default=str) + "\n")


class WebhookNotifier:
    """POST Slack's incoming-webhook JSON; the URL is a secret (never logged whole)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url, self.timeout_s = url, timeout_s

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.url.split('/')[2] if '//' in self.url else '?'})"

    def send(self, event: Event) -> None:
        body = json.dumps({"text": event.text(), "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": event.text()}}]}).encode()
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("webhook URL must be http(s)")
        req = urllib.request.Request(self.url, data=body, method="POST",  # noqa: S310 - http(s) checked above
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - configured webhook
            if resp.status >= 300:
                raise OSError(f"webhook answered HTTP {resp.status}")


def configured() -> list[Notifier]:
    from tollgate import settings

    s = settings.current()
    out: list[Notifier] = [LogNotifier()]
    if s.notifier == "file":
        out.append(FileNotifier(settings.evals_settings().home / "notifications.jsonl"))
    if s.notify_webhook:
        out.append(WebhookNotifier(s.notify_webhook))
    return out


def notify(kind: str, subject: str, lines: list[str] | tuple[str, ...], *, context: dict[str, Any] | None = None,
           notifiers: list[Notifier] | None = None) -> list[str]:
    """Send to every notifier; returns the failures (as text) and never raises for one."""
    event = Event(kind, subject, tuple(lines), dict(context or {}))
    failures = []
    for n in notifiers if notifiers is not None else configured():
        try:
            n.send(event)
        except (OSError, ValueError, urllib.error.URLError) as exc:  # a notifier never decides anything
            failures.append(f"{type(n).__name__}: {exc}")
            log.error("notification %r not delivered by %r: %s", subject, n, exc)
    return failures
