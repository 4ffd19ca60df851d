"""PII redaction of logged text and guardrail checks of outputs, by the project's safety policy.

Both read ``evals/policies/safety.yaml`` (the file the safety suite and ``thresholds/`` use):
its ``pii.patterns`` (email, phone, card numbers with a Luhn check, SSN, NINO, IBAN) decide
what is redacted from the request log, and its guardrail rules that apply to every
category (``categories: all``) are checked on each output (``llm_guardrail_violations_total``).
Redaction ignores the patterns' allow-lists: a log is not the place to keep "safe" PII.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evals.suites.policy import VALIDATORS, SafetyPolicy, load_policy


@dataclass
class Safety:
    policy: SafetyPolicy
    guardrails: bool

    @classmethod
    def load(cls, path: Path, guardrails: bool) -> Safety:
        return cls(load_policy(path, "guardrails.policy"), guardrails)

    def redact(self, text: str | None) -> tuple[str | None, bool]:
        """``text`` with every PII match replaced by ``[REDACTED:<pattern>]``, and whether anything was."""
        if not text:
            return text, False
        changed = False
        for pat in self.policy.pii_patterns:
            def sub(m: object, name: str = pat.name, validator: str | None = pat.validator) -> str:
                value = m.group(0)  # type: ignore[attr-defined]
                if validator and not VALIDATORS[validator](value.strip()):
                    return str(value)
                nonlocal changed
                changed = True
                return f"[REDACTED:{name}]"

            text = pat.regex.sub(sub, text)
        return text, changed

    def check(self, prompt: str, output: str) -> tuple[list[str], bool]:
        """(ids of the guardrail rules the output breaks, whether it is a refusal)."""
        if not self.guardrails or not output:
            return [], False
        return self.policy.violations("", prompt, output), self.policy.is_refusal(output)
