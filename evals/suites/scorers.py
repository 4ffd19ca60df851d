"""Deterministic scorers: no judge, no network, same answer every time.

`task_success` dispatches on the dataset item's `scorer` field:

- ``exact``: normalized exact match (case, whitespace, punctuation and a leading
  "Answer:" are ignored) against `reference`;
- ``numeric``: the first number in the answer (digits or a small number word)
  is within `tolerance` of the number in `reference`;
- ``regex``: `pattern` matches the answer (case-insensitive);
- ``contains``: the normalized reference is a substring of the normalized answer.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from difflib import SequenceMatcher
from typing import Any

SCORERS = ("exact", "numeric", "regex", "contains")

_PUNCT = str.maketrans({c: " " for c in string.punctuation if c not in "$.'"})
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}
_NUM_RE = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])-?\d+(?:\.\d+)?|\b(" + "|".join(_NUMBER_WORDS) + r")\b",
                     re.IGNORECASE)


def normalize_text(text: str) -> str:
    """Lower-case, drop most punctuation and a leading 'answer:', collapse whitespace."""
    t = (text or "").strip().lower()
    t = re.sub(r"^(the\s+)?answer\s*(is)?\s*:?\s*", "", t)
    t = t.translate(_PUNCT)
    t = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", t)  # a dot is punctuation unless it sits inside a number
    return " ".join(t.split())


def first_number(text: str) -> float | None:
    """The first number in `text`: 1,234.5 / 42 / -3 / 'seven'. None when there is none."""
    m = _NUM_RE.search(text or "")
    if not m:
        return None
    token = m.group(0)
    if token.lower() in _NUMBER_WORDS:
        return float(_NUMBER_WORDS[token.lower()])
    return float(token.replace(",", ""))


def exact_match(answer: str, reference: str) -> bool:
    return normalize_text(answer) == normalize_text(reference)


def numeric_match(answer: str, reference: str, tolerance: float = 0.0) -> bool:
    want = first_number(reference)
    got = first_number(answer)
    if want is None or got is None:
        return False
    return abs(got - want) <= tolerance + 1e-9


def regex_match(answer: str, pattern: str) -> bool:
    return re.search(pattern, answer or "", re.IGNORECASE) is not None


def contains_match(answer: str, reference: str) -> bool:
    ref = normalize_text(reference)
    return bool(ref) and ref in normalize_text(answer)


def task_success(item: dict[str, Any], answer: str) -> bool:
    """Did the answer solve the item, by the item's own deterministic scorer?"""
    scorer = item.get("scorer", "exact")
    if scorer == "exact":
        return exact_match(answer, item["reference"])
    if scorer == "numeric":
        return numeric_match(answer, item["reference"], float(item.get("tolerance") or 0.0))
    if scorer == "regex":
        return regex_match(answer, item["pattern"])
    if scorer == "contains":
        return contains_match(answer, item["reference"])
    raise ValueError(f"unknown scorer {scorer!r}")  # the dataset check refuses this earlier


def token_f1(answer: str, reference: str) -> float:
    """SQuAD-style token F1 between normalized answer and reference (0..1)."""
    a, r = normalize_text(answer).split(), normalize_text(reference).split()
    if not a or not r:
        return float(a == r)
    common = Counter(a) & Counter(r)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(a), same / len(r)
    return 2 * precision * recall / (precision + recall)


def char_similarity(answer: str, reference: str) -> float:
    """Character-level similarity ratio of the normalized strings (difflib, 0..1)."""
    return SequenceMatcher(None, normalize_text(answer), normalize_text(reference)).ratio()


def reference_recall(answer: str, reference: str) -> float:
    """Share of reference tokens present in the answer: long but correct answers keep credit."""
    a, r = set(normalize_text(answer).split()), normalize_text(reference).split()
    if not r:
        return 0.0
    return sum(tok in a for tok in r) / len(r)
