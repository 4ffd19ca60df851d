"""Features of one window of request-log rows: what drift is measured on.

Per request row (``kind == "request"``; the latest feedback row of the same request id
joined in, in Arrow, so a million rows cost milliseconds, not a Python loop):

numeric      prompt_tokens, output_tokens, ttft_s (streamed requests only), duration_s,
             feedback_score (requests with feedback only), refusal (0/1: its mean is the
             refusal share), guardrail_hits (hits per request), fallback (0/1)
categorical  status, arm, language, topic (null -> "(missing)": a column nobody fills is
             one category in both windows, and a language appearing later is drift),
             answer_class: the class of the answer's first token (empty, refusal, number,
             code, punctuation, word, or "(missing)" when output text is not logged)
text         prompt_text (and output_text) for embedding drift, when the log carries text
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evals.catalogue import DRIFT_CATEGORICAL, DRIFT_NUMERIC

# The feature lists are the drift suite's metric catalogue (evals.catalogue): a gate may name
# X_psi_drift, X_ks_drift, ... only for these X.
NUMERIC = DRIFT_NUMERIC
CATEGORICAL = DRIFT_CATEGORICAL
MISSING = "(missing)"

# First-token classes of an answer, checked in this order (lower-cased, leading space trimmed).
ANSWER_CLASSES = (
    ("refusal", r"^(i'?m sorry|sorry|i can(no|')t|i am (not able|unable)|i'?m (not able|unable)|unable to|as an ai)"),
    ("number", r"^[-+]?[0-9]"),
    ("code", r"^(```|[{\[<])"),
    ("punctuation", r"^[^\w\s]"),
    ("word", r"^\w"),
)


@dataclass
class Features:
    """One window's features: numeric arrays (float64, nulls dropped), categorical arrays, texts."""

    rows: int
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    categorical: dict[str, pa.Array] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)


def requests_with_feedback(table: pa.Table) -> pa.Table:
    """Request rows with the last feedback_score of their request id (feedback rows' own score wins)."""
    requests = table.filter(pc.equal(table["kind"], "request"))
    feedback = table.filter(pc.and_(pc.equal(table["kind"], "feedback"), pc.is_valid(table["feedback_score"])))
    if feedback.num_rows == 0:
        return requests
    fb = feedback.sort_by("ts").select(["request_id", "feedback_score"])
    # last feedback per request: group and take the last value in time order
    last = fb.group_by("request_id", use_threads=False).aggregate([("feedback_score", "last")])
    last = last.rename_columns(["request_id", "fb_score"])
    # a lookup, not Table.join: Acero's join cannot carry list columns (guardrail_hits)
    pos = pc.index_in(requests["request_id"], value_set=last["request_id"].combine_chunks())
    fb_score = pc.take(last["fb_score"], pos)
    score = pc.if_else(pc.is_valid(fb_score), fb_score, requests["feedback_score"])
    idx = requests.schema.get_field_index("feedback_score")
    return requests.set_column(idx, "feedback_score", score)


def answer_class(output_text: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The first-token class of every answer (vectorised regexes; null text -> "(missing)")."""
    text = pc.utf8_lower(pc.utf8_ltrim_whitespace(output_text))
    out = pa.nulls(len(text), pa.string())
    for name, pattern in reversed(ANSWER_CLASSES):
        out = pc.if_else(pc.match_substring_regex(text, pattern), name, out)
    out = pc.if_else(pc.equal(text, ""), "empty", out)
    out = pc.if_else(pc.is_null(output_text), MISSING, pc.fill_null(out, "other"))
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def _numeric(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = pc.drop_null(col)
    if pa.types.is_boolean(arr.type):
        arr = pc.cast(arr, pa.int8())
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)


def extract(table: pa.Table, *, with_text: bool = True) -> Features:
    """The features of a window table of evals.requestlog.SCHEMA."""
    req = requests_with_feedback(table)
    feats = Features(rows=int(req.num_rows))
    for name in ("prompt_tokens", "output_tokens", "ttft_s", "duration_s", "feedback_score", "refusal", "fallback"):
        feats.numeric[name] = _numeric(req[name])
    hits = pc.fill_null(pc.list_value_length(req["guardrail_hits"]), 0)
    feats.numeric["guardrail_hits"] = _numeric(hits)
    status = pc.cast(req["status"], pa.string())
    for name, col in (("status", status), ("arm", req["arm"]), ("language", req["language"]),
                      ("topic", req["topic"])):
        filled = pc.fill_null(col, MISSING)
        feats.categorical[name] = filled.combine_chunks() if isinstance(filled, pa.ChunkedArray) else filled
    feats.categorical["answer_class"] = answer_class(req["output_text"])
    if with_text:
        feats.prompts = [t for t in pc.drop_null(req["prompt_text"]).to_pylist() if t]
        feats.answers = [t for t in pc.drop_null(req["output_text"]).to_pylist() if t]
    return feats
