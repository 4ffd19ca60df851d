"""The metric names each producer of results files can write, by suite: what a gate may name.

A gate on a name its suite never produces is a typo in the threshold file, not a failed
run: bad input (exit 2, one line naming the file and ``gates.NAME.metric``, nothing
written). A gate on a name the suite does produce that one run's results lack still
fails closed (exit 1): a broken suite never looks like bad input, and never passes.

The producers (each writes ``meta.suite``; ``evals.gate_check`` picks the catalogue by it,
else by the threshold file's stem, ``quality.yaml`` / ``drift.warn.yaml``):

- quality, safety: ``python -m evals.run --suite quality|safety`` (evals.suites);
- latency: ``python -m evals.benchmark`` (evals.loadgen's ``BenchmarkMetrics.as_metrics``);
- canary: ``python -m evals.canary`` (the replayed canary, evals.canary.stats) and the
  progressive canary's verdict (evals.canary.analysis: ``canary.validate`` and the
  model_promotion DAG), judged by the same thresholds/canary.yaml;
- drift: ``python -m evals.drift``: per feature of the request log (``DRIFT_NUMERIC``,
  ``DRIFT_CATEGORICAL``; evals.drift.features takes its feature lists from here).

Derived names are known when their base is: ``X_delta_vs_baseline`` when X (or ``X_score``:
``quality_delta_vs_baseline`` from ``quality_score``) is, ``X_ratio_vs_baseline`` when X is
(evals.gates derives them from a baseline). Names with a part the input decides (a safety
policy's rule ids) are patterns.

A producer that writes a new metric declares it here; tests/evals/test_catalogue.py runs
each producer and fails on a name it wrote that its catalogue lacks, and checks every
shipped threshold file against the catalogues.

Standard library only: the gate engine, the pod CLIs and any parse-time caller import it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CANARY", "CANARY_ANALYSIS_METRICS", "CANARY_REPLAY_METRICS", "CATALOGUES", "DELTA_SUFFIX", "DERIVED_SUFFIXES",
    "DRIFT", "DRIFT_CATEGORICAL", "DRIFT_NUMERIC", "LATENCY", "QUALITY", "QUALITY_TASKS", "RATIO_SUFFIX", "SAFETY",
    "SAFETY_CATEGORIES", "Catalogue", "derived_bases", "for_suite", "suite_for",
]

DELTA_SUFFIX = "_delta_vs_baseline"
RATIO_SUFFIX = "_ratio_vs_baseline"
DERIVED_SUFFIXES = (DELTA_SUFFIX, RATIO_SUFFIX)


def derived_bases(metric: str) -> tuple[str, ...]:
    """The measured names a derived name may compare (evals.gates.derived_from), or () for a measured one."""
    if metric.endswith(DELTA_SUFFIX):
        base = metric[: -len(DELTA_SUFFIX)]
        return (base, base + "_score")
    if metric.endswith(RATIO_SUFFIX):
        return (metric[: -len(RATIO_SUFFIX)],)
    return ()


@dataclass(frozen=True)
class Catalogue:
    """Every metric name one suite's producers write into ``metrics``."""

    suite: str
    producers: tuple[str, ...]
    names: frozenset[str]
    patterns: tuple[tuple[str, str], ...] = ()  # (shown as, full-match regex): names the input completes
    shown: tuple[str, ...] = ()  # what an error message lists: the names gates usually bound
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple(re.compile(rx) for _, rx in self.patterns))

    def produces(self, metric: str) -> bool:
        """A name a producer of this suite writes itself."""
        return metric in self.names or any(p.fullmatch(metric) for p in self._compiled)

    def knows(self, metric: str) -> bool:
        """A name a gate of this suite may bound: produced, or derived from a produced name."""
        if self.produces(metric):
            return True
        return any(not b.endswith(DERIVED_SUFFIXES) and self.produces(b) for b in derived_bases(metric))

    def undeclared(self, metrics: Iterable[str]) -> list[str]:
        """The names in ``metrics`` (what a producer wrote) this catalogue does not declare."""
        return sorted(m for m in metrics if not self.produces(m))

    def unknown(self, metric: str) -> str:
        """Why ``metric`` is refused, in one line: the closest name, then what the suite has."""
        pool = set(self.names)
        pool |= {n + s for n in self.names for s in DERIVED_SUFFIXES}
        pool |= {n[: -len("_score")] + DELTA_SUFFIX for n in self.names if n.endswith("_score")}
        close = difflib.get_close_matches(metric, sorted(pool), n=1, cutoff=0.8)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return (f"unknown metric {metric!r} for the {self.suite} suite ({hint}known: {', '.join(self.shown)}, "
                f"and X{DELTA_SUFFIX} / X{RATIO_SUFFIX} of a known X; every name: evals/catalogue.py)")


def _with_interval(*names: str) -> set[str]:
    """A metric evals.suites.stats.summarize writes, with its 95 % interval and count."""
    return {f"{n}{s}" for n in names for s in ("", "_ci_low", "_ci_high", "_n")}


# -- quality and safety: python -m evals.run ---------------------------------------------------------

# The label sets of evals/datasets/schema.yaml (every dataset is checked against them):
# the per-task and per-category rates are named after them.
QUALITY_TASKS = ("order_normalization", "factual", "grounded")
SAFETY_CATEGORIES = ("harmful", "jailbreak", "pii", "benign")

# Both suites: evals.run's error counts and evals.suites.runner.usage_and_cost.
_RUN_ERRORS = {"samples_total", "samples_errored", "error_rate", "timeout_rate"}
_RUN_USAGE = {"latency_p50_ms", "latency_p95_ms", "latency_mean_ms", "prompt_tokens_total", "completion_tokens_total",
              "requests_per_second", "output_tokens_per_second", "generation_wall_s", "cost_per_request_usd",
              "cost_per_1k_tokens_usd"}

QUALITY = Catalogue(
    suite="quality",
    producers=("python -m evals.run --suite quality",),
    names=frozenset(
        _with_interval("task_success_rate", "groundedness_score", "hallucination_rate", "answer_relevancy",
                       "quality_score", "exact_match_rate", "token_f1", "embedding_groundedness",
                       "reference_similarity")
        | {"char_similarity", "reference_recall", "groundedness_score_repeat_std_mean",
           "answer_relevancy_repeat_std_mean", "judge_error_rate", "judge_errors", "judgements"}
        | {"quality_delta_vs_baseline"}  # evals.run --baseline writes it itself (paired on item ids)
        | {f"task_success_rate_{t}" for t in QUALITY_TASKS}
        | _RUN_ERRORS | _RUN_USAGE),
    shown=("task_success_rate", "exact_match_rate", "token_f1", "quality_score", "embedding_groundedness",
           "groundedness_score", "hallucination_rate", "answer_relevancy", "error_rate", "judge_error_rate"),
)

SAFETY = Catalogue(
    suite="safety",
    producers=("python -m evals.run --suite safety",),
    names=frozenset(
        _with_interval("refusal_rate", "over_refusal_rate", "pii_leakage_rate", "guardrail_violation_rate")
        | {f"refusal_rate_{c}" for c in SAFETY_CATEGORIES}
        | _RUN_ERRORS | _RUN_USAGE),
    # one rate per guardrail rule of the policy file (--policy), its id with '-' as '_'
    patterns=(("guardrail_<rule id>_violation_rate", r"guardrail_.+_violation_rate"),),
    shown=("refusal_rate", "over_refusal_rate", "pii_leakage_rate", "guardrail_violation_rate",
           "guardrail_<rule id>_violation_rate", "error_rate"),
)

# -- latency: python -m evals.benchmark --------------------------------------------------------------

_BENCH_PERCENTILES = (50, 95, 99)
_BENCH_FIGURES = ("latency", "ttft", "tpot", "itl", "client_queue")

LATENCY = Catalogue(
    suite="latency",
    producers=("python -m evals.benchmark",),
    names=frozenset(
        {f"{f}_p{q}_ms" for f in _BENCH_FIGURES for q in _BENCH_PERCENTILES}
        | {"latency_mean_ms", "ttft_mean_ms", "tpot_mean_ms", "requests_per_second", "output_tokens_per_second",
           "error_rate", "timeout_rate", "goodput_rps", "requests_measured", "requests_ok", "requests_failed",
           "requests_timed_out", "warmup_requests", "elapsed_s", "mean_output_tokens", "delivered_rate_rps",
           "delivered_concurrency_mean", "peak_in_flight", "connections_opened", "stale_connection_retries",
           "requests_unsent", "requested_rate_rps", "requested_concurrency"}),
    shown=("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "ttft_p95_ms", "tpot_p95_ms", "requests_per_second",
           "goodput_rps", "error_rate", "timeout_rate"),
)

# -- canary: python -m evals.canary, canary.validate, the progressive canary's verdict ----------------

_CANARY_QUALITY = {"canary_quality", "stable_quality", "canary_scored", "stable_scored", "quality_welch_t",
                   "quality_p_value", "quality_cohens_d", "canary_significant_quality_regression"}
# evals.canary (replayed traffic): evals.canary.stats.canary_metrics
CANARY_REPLAY_METRICS = frozenset(
    _CANARY_QUALITY | {"canary_requests", "stable_requests", "canary_errors", "stable_errors", "canary_error_rate",
                       "stable_error_rate", "canary_error_rate_delta", "canary_quality_delta",
                       "canary_min_arm_samples"})
# the progressive canary (Prometheus): evals.canary.analysis' verdict metrics
CANARY_ANALYSIS_METRICS = frozenset(
    _CANARY_QUALITY | {"canary_requests", "stable_requests", "canary_error_rate", "stable_error_rate",
                       "canary_error_rate_delta", "canary_latency_p95_s", "stable_latency_p95_s", "canary_ttft_p95_s",
                       "stable_ttft_p95_s", "canary_guardrail_rate", "canary_min_arm_samples"})

CANARY = Catalogue(
    suite="canary",
    producers=("python -m evals.canary", "python -m canary.validate", "model_promotion's progressive canary"),
    names=CANARY_REPLAY_METRICS | CANARY_ANALYSIS_METRICS,
    shown=("canary_quality", "canary_error_rate", "canary_error_rate_delta", "canary_significant_quality_regression",
           "canary_min_arm_samples", "stable_quality", "canary_latency_p95_s", "canary_ttft_p95_s"),
)

# -- drift: python -m evals.drift --------------------------------------------------------------------

# The request-log features drift is measured on (evals.drift.features takes these).
DRIFT_NUMERIC = ("prompt_tokens", "output_tokens", "ttft_s", "duration_s", "feedback_score", "refusal",
                 "guardrail_hits", "fallback")
DRIFT_CATEGORICAL = ("status", "arm", "language", "topic", "answer_class")

# Per numeric feature X: X_psi_drift and X_ks_drift (gated: the effect when significant), the raw
# statistics, and the BH q-values of its tests (X_ks, X_mean). Per categorical feature: X_psi_drift,
# the chi-square statistics and X_chi2's q-value. (evals.drift.compare)
_DRIFT_NUMERIC_STATS = ("psi_drift", "ks_drift", "psi", "ks_stat", "ks_pvalue", "wasserstein", "wasserstein_norm",
                        "jensenshannon", "ref_mean", "cur_mean", "ks_qvalue", "mean_qvalue")
_DRIFT_CATEGORICAL_STATS = ("psi_drift", "psi", "chi2", "chi2_pvalue", "jensenshannon", "chi2_qvalue")
_DRIFT_EMBEDDING = {"prompt_embedding_mmd_drift", "prompt_embedding_far_drift", "prompt_embedding_mmd2",
                    "prompt_embedding_mmd_pvalue", "prompt_embedding_far_share", "prompt_embedding_far_pvalue",
                    "prompt_embedding_mmd_qvalue", "prompt_embedding_far_qvalue"}
# the runbook's triggers and what they are computed from
_DRIFT_TRIGGERS = {"quality_drop", "refusal_rate_increase", "latency_p95_ratio", "prompt_tokens_mean_ratio",
                   "refusal_share_ref", "refusal_share_cur", "refusal_share_qvalue", "duration_s_p95_ref",
                   "duration_s_p95_cur"}
# evals.drift.cli: the data checks and row counts (never held back by --persistence)
_DRIFT_CHECKS = {"drift_checks_passed", "reference_rows", "current_rows"}
_DRIFT_STATISTICS = ({f"{f}_{s}" for f in DRIFT_NUMERIC for s in _DRIFT_NUMERIC_STATS}
                     | {f"{f}_{s}" for f in DRIFT_CATEGORICAL for s in _DRIFT_CATEGORICAL_STATS}
                     | _DRIFT_EMBEDDING | _DRIFT_TRIGGERS)

DRIFT = Catalogue(
    suite="drift",
    producers=("python -m evals.drift",),
    # --persistence keeps a held-back gate's window value as X_window (X is then neutral)
    names=frozenset(_DRIFT_STATISTICS | _DRIFT_CHECKS | {f"{n}_window" for n in _DRIFT_STATISTICS}),
    shown=("<feature>_psi_drift", "<numeric feature>_ks_drift", "prompt_embedding_mmd_drift",
           "prompt_embedding_far_drift", "quality_drop", "refusal_rate_increase", "latency_p95_ratio",
           "prompt_tokens_mean_ratio", "drift_checks_passed", "reference_rows", "current_rows",
           f"numeric features {'/'.join(DRIFT_NUMERIC)}", f"categorical {'/'.join(DRIFT_CATEGORICAL)}"),
)

CATALOGUES: dict[str, Catalogue] = {c.suite: c for c in (QUALITY, SAFETY, LATENCY, CANARY, DRIFT)}


def for_suite(suite: object) -> Catalogue | None:
    """The catalogue of ``suite``, or None for a suite no producer declares (nothing to check against)."""
    return CATALOGUES.get(suite) if isinstance(suite, str) else None


def suite_for(results_suite: object, threshold_file: str | Path) -> str | None:
    """Which suite's names a threshold file may gate on: the results' ``meta.suite`` (what
    produced them), else the threshold file's stem up to its first dot (``quality.yaml``,
    ``drift.warn.yaml`` -> drift); None when neither is a catalogued suite."""
    if for_suite(results_suite) is not None:
        return str(results_suite)
    stem = Path(threshold_file).name.split(".", 1)[0]
    return stem if stem in CATALOGUES else None
