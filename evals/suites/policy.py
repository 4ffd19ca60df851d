"""The safety policy: PII detectors, refusal markers and guardrail rules, loaded from YAML.

Everything a platform team may want to change lives in evals/policies/safety.yaml;
this module only knows the rule *types* and a few validators (Luhn for card numbers,
structural checks for US SSNs and UK national insurance numbers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals import inputs
from evals.errors import BadInput

RULE_TYPES = ("must_refuse", "must_not_refuse", "no_pii", "forbidden_regex", "max_chars")


def luhn_valid(number: str) -> bool:
    """True when the digits of `number` (separators ignored) pass the Luhn checksum."""
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) < 13 or len(digits) > 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def ssn_valid(value: str) -> bool:
    """A structurally valid US SSN: area not 000, 666 or 9xx; group and serial not zero."""
    m = re.fullmatch(r"(\d{3})-(\d{2})-(\d{4})", value)
    if not m:
        return False
    area, group, serial = m.groups()
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def nino_valid(value: str) -> bool:
    """A UK national insurance number whose prefix is not one HMRC never issues."""
    v = re.sub(r"\s", "", value).upper()
    return bool(re.fullmatch(r"[A-Z]{2}\d{6}[A-D]", v)) and v[:2] not in {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}


VALIDATORS = {"luhn": luhn_valid, "ssn": ssn_valid, "nino": nino_valid}


@dataclass(frozen=True)
class PiiPattern:
    name: str
    regex: re.Pattern[str]
    validator: str | None = None
    allow: tuple[re.Pattern[str], ...] = ()

    def find(self, text: str) -> list[str]:
        found = []
        for m in self.regex.finditer(text or ""):
            value = m.group(0).strip()
            if self.validator and not VALIDATORS[self.validator](value):
                continue
            if any(a.search(value) for a in self.allow):
                continue
            found.append(value)
        return found


@dataclass(frozen=True)
class GuardrailRule:
    id: str
    type: str
    categories: tuple[str, ...] | None  # None: every category
    patterns: tuple[re.Pattern[str], ...] = ()
    limit: int | None = None

    def applies_to(self, category: str) -> bool:
        return self.categories is None or category in self.categories


@dataclass(frozen=True)
class PiiFinding:
    kind: str
    value: str


@dataclass
class SafetyPolicy:
    pii_patterns: list[PiiPattern]
    refusal_markers: list[re.Pattern[str]]
    guardrails: list[GuardrailRule]
    refusal_window_chars: int = 200
    allow_echo_from_prompt: bool = True
    version: str = "1"
    source: str = ""
    categories: set[str] = field(default_factory=set)

    # -- decisions (pure) ---------------------------------------------------------------
    def find_pii(self, text: str, prompt: str = "") -> list[PiiFinding]:
        """PII in `text`; with allow_echo_from_prompt, values the prompt itself contained are not counted."""
        prompt_digits = re.sub(r"\D", "", prompt or "")
        out = []
        for pat in self.pii_patterns:
            for value in pat.find(text):
                if self.allow_echo_from_prompt and prompt and (
                    value in prompt or (len(re.sub(r"\D", "", value)) >= 9 and re.sub(r"\D", "", value) in prompt_digits)
                ):
                    continue
                out.append(PiiFinding(pat.name, value))
        return out

    def is_refusal(self, text: str) -> bool:
        head = (text or "")[: self.refusal_window_chars]
        return any(m.search(head) for m in self.refusal_markers)

    def violations(self, category: str, prompt: str, response: str) -> list[str]:
        """Ids of the guardrail rules this response breaks."""
        broken = []
        refused = self.is_refusal(response)
        for rule in self.guardrails:
            if rule.applies_to(category) and not self._rule_holds(rule, refused, prompt, response):
                broken.append(rule.id)
        return broken


    def _rule_holds(self, rule: GuardrailRule, refused: bool, prompt: str, response: str) -> bool:
        checks = {
            "must_refuse": lambda: refused,
            "must_not_refuse": lambda: not refused,
            "no_pii": lambda: not self.find_pii(response, prompt),
            "forbidden_regex": lambda: not any(p.search(response or "") for p in rule.patterns),
            "max_chars": lambda: rule.limit is None or len(response or "") <= rule.limit,
        }
        return checks[rule.type]()


def _compile(where: str, pattern: Any) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise BadInput(f"{where}: a regex must be a non-empty string")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise BadInput(f"{where}: invalid regex {pattern!r} ({exc})") from None


def load_policy(path: str | Path, flag: str = "--policy") -> SafetyPolicy:  # noqa: C901 - a flat list of checks, each naming its entry
    """Read and check a policy file; every mistake is BadInput naming the file and the entry."""
    p = Path(path)
    data = inputs.read_yaml(p, flag)
    if not isinstance(data, dict):
        raise BadInput(f"{flag} {p}: top level must be a mapping with pii, refusal, guardrails")
    unknown = set(data) - {"version", "pii", "refusal", "guardrails"}
    if unknown:
        raise BadInput(f"{flag} {p}: unknown key(s) {sorted(unknown)}")

    pii = data.get("pii") or {}
    patterns = []
    for i, entry in enumerate(pii.get("patterns") or []):
        where = f"{p}: pii.patterns[{i}]"
        if not isinstance(entry, dict) or "name" not in entry or "regex" not in entry:
            raise BadInput(f"{where}: needs name and regex")
        validator = entry.get("validator")
        if validator is not None and validator not in VALIDATORS:
            raise BadInput(f"{where}: unknown validator {validator!r} (known: {sorted(VALIDATORS)})")
        patterns.append(PiiPattern(
            name=str(entry["name"]), regex=_compile(where, entry["regex"]), validator=validator,
            allow=tuple(_compile(where + ".allow", a) for a in entry.get("allow") or []),
        ))

    refusal = data.get("refusal") or {}
    markers = [_compile(f"{p}: refusal.markers[{i}]", "(?i)" + m if isinstance(m, str) else m)
               for i, m in enumerate(refusal.get("markers") or [])]
    if not markers:
        raise BadInput(f"{p}: refusal.markers must list at least one regex")

    rules = []
    seen: set[str] = set()
    for i, entry in enumerate(data.get("guardrails") or []):
        where = f"{p}: guardrails[{i}]"
        if not isinstance(entry, dict) or "id" not in entry or "type" not in entry:
            raise BadInput(f"{where}: needs id and type")
        if entry["type"] not in RULE_TYPES:
            raise BadInput(f"{where}: unknown type {entry['type']!r} (known: {', '.join(RULE_TYPES)})")
        if entry["id"] in seen:
            raise BadInput(f"{where}: duplicate id {entry['id']!r}")
        seen.add(entry["id"])
        cats = entry.get("categories", "all")
        if cats != "all" and not (isinstance(cats, list) and all(isinstance(c, str) for c in cats)):
            raise BadInput(f"{where}: categories must be 'all' or a list of names")
        if entry["type"] == "forbidden_regex" and not entry.get("patterns"):
            raise BadInput(f"{where}: forbidden_regex needs patterns")
        if entry["type"] == "max_chars" and not isinstance(entry.get("limit"), int):
            raise BadInput(f"{where}: max_chars needs an integer limit")
        rules.append(GuardrailRule(
            id=str(entry["id"]), type=entry["type"],
            categories=None if cats == "all" else tuple(cats),
            patterns=tuple(_compile(f"{where}.patterns", x) for x in entry.get("patterns") or []),
            limit=entry.get("limit"),
        ))
    return SafetyPolicy(
        pii_patterns=patterns, refusal_markers=markers, guardrails=rules,
        refusal_window_chars=int(refusal.get("window_chars", 200)),
        allow_echo_from_prompt=bool(pii.get("allow_echo_from_prompt", True)),
        version=str(data.get("version", "1")), source=str(p),
    )
