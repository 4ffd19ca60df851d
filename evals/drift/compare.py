"""One window against the reference summary: every statistic, BH-corrected, as gate metrics.

Why the gate metrics look the way they do: a gate file (evals.gates) bounds one number,
and a drift gate must need *both* a significant result and a minimum effect. So each
gated metric is "the effect, when it is significant": ``X_psi_drift`` is the PSI of
feature X if its test (KS for numbers, chi-square for categories) is significant after
Benjamini-Hochberg at ``alpha``, else 0; the gate's bound is the minimum effect
(thresholds/drift.yaml: PSI 0.2). A million rows make every p-value tiny, the effect
bound keeps a trivial shift quiet; a large effect on 50 rows is not significant and
stays quiet too. The raw statistics, p- and q-values are reported beside them.

A feature with too few values in *both* windows (no feedback collected, no streaming
so no TTFT, no prompt text logged) is skipped: its gated metric is 0 and its verdict says
"skipped" and why. Present in only one window, it is a change nobody can measure: the
gated metric is null and the gate fails closed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from evals.drift import embedding, stats
from evals.drift.features import CATEGORICAL, NUMERIC, Features
from evals.drift.reference import ReferenceSummary

MIN_FEATURE_N = 30  # fewer values than this in a window: the feature is not tested in it
NEUTRAL = {"_ratio": 1.0}  # gated metrics whose "no drift" value is not 0 (by name suffix)


@dataclass
class Test:
    """One significance test; its q-value is filled in by the BH step."""

    name: str
    pvalue: float
    qvalue: float = float("nan")


@dataclass
class FeatureResult:
    feature: str
    kind: str  # numeric | categorical | text | trigger
    statistic: str
    value: float | None
    metric: str  # the gated metric in the results
    pvalue: float | None = None
    qvalue: float | None = None
    threshold: float | None = None  # filled from the gate file
    verdict: str = "ok"  # ok | drift | warn | skipped | missing
    reference_size: int = 0
    current_size: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Comparison:
    metrics: dict[str, float | None] = field(default_factory=dict)
    features: list[FeatureResult] = field(default_factory=list)
    tests: dict[str, Test] = field(default_factory=dict)


def neutral(metric: str) -> float:
    for suffix, value in NEUTRAL.items():
        if metric.endswith(suffix):
            return value
    return 0.0


def _significant_effect(effect: float, test: Test | None, alpha: float, metric: str) -> float:
    if test is None or not math.isfinite(test.qvalue):
        return neutral(metric)
    return effect if test.qvalue < alpha else neutral(metric)


class _Builder:
    """Collects statistics and tests first, so BH can run across all of them before gating."""

    def __init__(self, ref: ReferenceSummary, cur: Features) -> None:
        self.ref, self.cur = ref, cur
        self.out = Comparison()
        self.pending: list[tuple[FeatureResult, float, str | None]] = []  # result, effect, test name

    def test(self, name: str, p: float) -> None:
        self.out.tests[name] = Test(name, float(p))

    def gated(self, result: FeatureResult, effect: float, test: str | None) -> None:
        self.pending.append((result, effect, test))

    def skip(self, result: FeatureResult, why: str, both_empty: bool) -> None:
        result.verdict, result.note = ("skipped", why) if both_empty else ("missing", why)
        self.out.metrics[result.metric] = neutral(result.metric) if both_empty else None
        self.out.features.append(result)

    def finish(self, alpha: float) -> Comparison:
        names = list(self.out.tests)
        for name, q in zip(names, stats.benjamini_hochberg([self.out.tests[n].pvalue for n in names]), strict=True):
            self.out.tests[name].qvalue = q
            self.out.metrics[f"{name}_qvalue"] = q
        for result, effect, test_name in self.pending:
            test = self.out.tests.get(test_name) if test_name else None
            if test is not None:
                result.pvalue, result.qvalue = test.pvalue, test.qvalue
            value = _significant_effect(effect, test, alpha, result.metric) if test_name else effect
            self.out.metrics[result.metric] = value
            self.out.features.append(result)
        return self.out


def _numeric(b: _Builder, name: str) -> stats.NumericStats | None:
    ref = b.ref.numeric.get(name)
    cur = b.cur.numeric.get(name, np.zeros(0))
    n_ref, n_cur = (ref.n if ref else 0), int(cur.size)
    results = [FeatureResult(name, "numeric", s, None, f"{name}_{s}_drift", reference_size=n_ref, current_size=n_cur)
               for s in ("psi", "ks")]
    if ref is None or n_ref < MIN_FEATURE_N or n_cur < MIN_FEATURE_N:
        why = f"{n_ref} reference and {n_cur} current values (minimum {MIN_FEATURE_N} in each)"
        for r in results:
            b.skip(r, why, both_empty=n_ref < MIN_FEATURE_N and n_cur < MIN_FEATURE_N)
        return None
    s = stats.numeric_stats(ref.sorted, ref.edges, ref.counts, ref.std, cur)
    m = b.out.metrics
    m.update({f"{name}_psi": s.psi, f"{name}_ks_stat": s.ks_stat, f"{name}_ks_pvalue": s.ks_pvalue,
              f"{name}_wasserstein": s.wasserstein, f"{name}_wasserstein_norm": s.wasserstein_norm,
              f"{name}_jensenshannon": s.jensenshannon, f"{name}_ref_mean": s.ref_mean, f"{name}_cur_mean": s.cur_mean})
    b.test(f"{name}_ks", s.ks_pvalue)
    b.test(f"{name}_mean", stats.welch_pvalue(ref.mean, ref.var, ref.n, float(cur.mean()),
                                              float(cur.var(ddof=1)), n_cur))
    results[0].value, results[1].value = s.psi, s.ks_stat
    b.gated(results[0], s.psi, f"{name}_ks")
    b.gated(results[1], s.ks_stat, f"{name}_ks")
    return s


def _categorical(b: _Builder, name: str) -> None:
    ref = b.ref.categorical.get(name, {})
    arr = b.cur.categorical.get(name)
    cur = stats.value_counts(arr) if arr is not None and len(arr) else {}
    n_ref, n_cur = sum(ref.values()), sum(cur.values())
    result = FeatureResult(name, "categorical", "psi", None, f"{name}_psi_drift", reference_size=n_ref,
                           current_size=n_cur)
    if n_ref < MIN_FEATURE_N or n_cur < MIN_FEATURE_N:
        b.skip(result, f"{n_ref} reference and {n_cur} current rows (minimum {MIN_FEATURE_N})",
               both_empty=n_ref < MIN_FEATURE_N and n_cur < MIN_FEATURE_N)
        return
    s = stats.categorical_stats(ref, cur)
    b.out.metrics.update({f"{name}_psi": s.psi, f"{name}_chi2": s.chi2, f"{name}_chi2_pvalue": s.chi2_pvalue,
                          f"{name}_jensenshannon": s.jensenshannon})
    b.test(f"{name}_chi2", s.chi2_pvalue)
    result.value = s.psi
    new = [c for c, r in zip(s.categories, s.ref_share, strict=True) if r == 0]
    if new:
        result.note = "new in current: " + ", ".join(new[:5])
    b.gated(result, s.psi, f"{name}_chi2")


def _embeddings(b: _Builder, embed: Any, enabled: bool) -> None:
    ref = b.ref.prompts
    n_ref, n_cur = (ref.n_prompts if ref else 0), len(b.cur.prompts)
    results = [FeatureResult("prompt_embedding", "text", "mmd2", None, "prompt_embedding_mmd_drift",
                             reference_size=n_ref, current_size=n_cur),
               FeatureResult("prompt_embedding", "text", "far_share", None, "prompt_embedding_far_drift",
                             reference_size=n_ref, current_size=n_cur)]
    if not enabled:
        for r in results:
            b.skip(r, "embedding drift switched off (--no-embeddings)", both_empty=True)
        return
    if ref is None or n_ref < MIN_FEATURE_N or n_cur < MIN_FEATURE_N:
        both = n_ref < MIN_FEATURE_N and n_cur < MIN_FEATURE_N
        for r in results:
            b.skip(r, f"{n_ref} reference and {n_cur} current prompts with text (redacted logs carry none)", both)
        return
    d = embedding.compare(ref, b.cur.prompts, embed=embed)
    b.out.metrics.update({"prompt_embedding_mmd2": d.mmd2, "prompt_embedding_mmd_pvalue": d.mmd_pvalue,
                          "prompt_embedding_far_share": d.far_share, "prompt_embedding_far_pvalue": d.far_pvalue})
    b.test("prompt_embedding_mmd", d.mmd_pvalue)
    b.test("prompt_embedding_far", d.far_pvalue)
    results[0].value, results[1].value = d.mmd2, d.far_share
    results[0].reference_size, results[0].current_size = d.ref_size, d.cur_size
    results[1].current_size = d.embedded
    b.gated(results[0], d.mmd2, "prompt_embedding_mmd")
    b.gated(results[1], max(0.0, d.far_share - (1.0 - embedding.FAR_QUANTILE)), "prompt_embedding_far")


def _triggers(b: _Builder, num: dict[str, stats.NumericStats | None]) -> None:
    """The users' runbook triggers: quality drop, rising refusals, latency shift, prompts growing."""
    m = b.out.metrics

    def add(feature: str, statistic: str, metric: str, effect: float | None, test: str | None, n: tuple[int, int],
            why_missing: str = "") -> None:
        r = FeatureResult(feature, "trigger", statistic, effect, metric, reference_size=n[0], current_size=n[1])
        if effect is None:
            b.skip(r, why_missing, both_empty=n[0] < MIN_FEATURE_N and n[1] < MIN_FEATURE_N)
        else:
            b.gated(r, effect, test)

    def sizes(name: str) -> tuple[int, int]:
        ref = b.ref.numeric.get(name)
        return (ref.n if ref else 0), int(b.cur.numeric.get(name, np.zeros(0)).size)

    fb = num.get("feedback_score")
    add("feedback_score", "mean_drop", "quality_drop", None if fb is None else max(0.0, fb.ref_mean - fb.cur_mean),
        "feedback_score_mean", sizes("feedback_score"), "too few feedback scores to compare")
    ref_r, cur_r = b.ref.numeric.get("refusal"), b.cur.numeric.get("refusal", np.zeros(0))
    if ref_r is not None and ref_r.n >= MIN_FEATURE_N and cur_r.size >= MIN_FEATURE_N:
        k1, k2 = int(round(ref_r.mean * ref_r.n)), int(cur_r.sum())
        b.test("refusal_share", stats.two_proportion_pvalue(k1, ref_r.n, k2, int(cur_r.size)))
        m["refusal_share_ref"], m["refusal_share_cur"] = ref_r.mean, float(cur_r.mean())
        add("refusal", "share_increase", "refusal_rate_increase", max(0.0, float(cur_r.mean()) - ref_r.mean),
            "refusal_share", sizes("refusal"))
    else:
        add("refusal", "share_increase", "refusal_rate_increase", None, None, sizes("refusal"), "too few requests")
    dur = b.ref.numeric.get("duration_s")
    cur_d = b.cur.numeric.get("duration_s", np.zeros(0))
    ratio = None
    if num.get("duration_s") is not None and dur is not None:
        ref_p95 = float(np.quantile(dur.sorted, 0.95))
        ratio = float(np.quantile(cur_d, 0.95)) / ref_p95 if ref_p95 > 0 else None
        m["duration_s_p95_ref"], m["duration_s_p95_cur"] = ref_p95, float(np.quantile(cur_d, 0.95))
    add("duration_s", "p95_ratio", "latency_p95_ratio", ratio, "duration_s_ks", sizes("duration_s"),
        "too few durations")
    pt = num.get("prompt_tokens")
    creep = None if pt is None or pt.ref_mean <= 0 else max(1.0, pt.cur_mean / pt.ref_mean)
    add("prompt_tokens", "mean_ratio", "prompt_tokens_mean_ratio", creep, "prompt_tokens_mean",
        sizes("prompt_tokens"), "too few requests")


def compare(ref: ReferenceSummary, cur: Features, *, alpha: float, embed: Any = None,
            embeddings: bool = True) -> Comparison:
    """Every statistic of ``cur`` against ``ref``; gated metrics already combine significance and effect."""
    b = _Builder(ref, cur)
    num = {name: _numeric(b, name) for name in NUMERIC}
    for name in CATEGORICAL:
        _categorical(b, name)
    _embeddings(b, embed, embeddings)
    _triggers(b, num)
    return b.finish(alpha)
