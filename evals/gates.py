"""The gate engine: threshold files, baselines and verdicts. Pure functions, no I/O
beyond reading the files handed in.

A threshold file (docs/ARCHITECTURE.md, "Threshold files"):

    gates:
      groundedness:
        metric: groundedness_score
        min: 0.85
        comparison: gte          # optional: gte for min, lte for max
        description: "..."       # optional
        confidence: 0.95         # optional: judge a bootstrap bound, not the mean

Fail closed: a gate whose metric is missing, null, NaN, infinite, or not a number
fails and says why. A file that is not this shape is bad input (BadInput, exit 2).

Baselines: `*_delta_vs_baseline` metrics are absolute differences in the metric's
own units, ``candidate - baseline``; `*_ratio_vs_baseline` metrics are ``candidate /
baseline`` (derived where the baseline is a positive number), for speeds that only mean
something against the champion measured on the same machine (p95 latency 1.25x the
champion's, throughput 0.8x). A metric named `X_score` also gets the short
name `X_delta_vs_baseline`, so `quality_score` (the quality suite's composite) gives
`quality_delta_vs_baseline`, the name thresholds/quality.yaml gates on. For 0..1 scores "-0.02" means two points of
the score (0.90 -> 0.88 passes a -0.02 bound; 0.90 -> 0.87 does not). They are
derived for every metric that is a number in both files; a results file may carry
such a metric itself, and an explicit baseline file takes precedence over it.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evals import inputs
from evals.errors import BadInput
from evals.results import is_number

COMPARISONS: dict[str, tuple[str, str]] = {
    # comparison: (bound key it goes with, symbol)
    "gte": ("min", ">="),
    "gt": ("min", ">"),
    "lte": ("max", "<="),
    "lt": ("max", "<"),
}
GATE_KEYS = {"metric", "min", "max", "comparison", "description", "confidence"}
FILE_KEYS = {"gates", "description", "profile"}
DELTA_SUFFIX = "_delta_vs_baseline"
RATIO_SUFFIX = "_ratio_vs_baseline"
DERIVED_SUFFIXES = (DELTA_SUFFIX, RATIO_SUFFIX)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261125


@dataclass(frozen=True)
class Gate:
    name: str
    metric: str
    bound: float
    comparison: str
    description: str = ""
    confidence: float | None = None

    @property
    def symbol(self) -> str:
        return COMPARISONS[self.comparison][1]

    @property
    def is_lower_bound(self) -> bool:
        return COMPARISONS[self.comparison][0] == "min"

    def holds(self, value: float) -> bool:
        if self.comparison == "gte":
            return value >= self.bound
        if self.comparison == "gt":
            return value > self.bound
        if self.comparison == "lte":
            return value <= self.bound
        return value < self.bound


@dataclass(frozen=True)
class ThresholdFile:
    path: str
    gates: tuple[Gate, ...]
    description: str = ""


@dataclass
class GateVerdict:
    name: str
    metric: str
    value: float | None
    bound: float
    comparison: str
    passed: bool
    reason: str
    description: str = ""
    baseline_value: float | None = None
    delta_vs_baseline: float | None = None
    confidence: float | None = None
    judged_value: float | None = None  # the bootstrap bound when confidence is set

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    passed: bool
    gates: list[GateVerdict] = field(default_factory=list)

    @property
    def failed(self) -> list[GateVerdict]:
        return [g for g in self.gates if not g.passed]


# -- parsing ------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: a second `min:` silently winning is a bug."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _bound_number(value: Any, where: str) -> float:
    if not is_number(value):
        raise BadInput(f"{where}: bound {value!r} is not a finite number")
    return float(value)


def _parse_gate(path: str, name: Any, spec: Any) -> Gate:
    """One entry of `gates:`; every refusal names the file and the key."""
    where = f"{path}: gates.{name}"
    if not isinstance(name, str) or not name:
        raise BadInput(f"{path}: gate names must be non-empty strings, got {name!r}")
    if not isinstance(spec, dict):
        raise BadInput(f"{where}: must be a mapping with 'metric' and 'min' or 'max'")
    unknown = sorted(set(map(str, spec)) - GATE_KEYS)
    if unknown:
        raise BadInput(f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(GATE_KEYS))})")
    metric = spec.get("metric")
    if not isinstance(metric, str) or not metric.strip():
        raise BadInput(f"{where}.metric: required, a metric name")
    bound_key, bound, comparison = _parse_bound(where, spec)
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise BadInput(f"{where}.description: must be a string")
    confidence = spec.get("confidence")
    if confidence is not None and not (is_number(confidence) and 0.5 <= float(confidence) < 1.0):
        raise BadInput(f"{where}.confidence: {confidence!r} must be a number in [0.5, 1)")
    return Gate(name=name, metric=metric.strip(), bound=bound, comparison=comparison,
                description=description, confidence=float(confidence) if confidence is not None else None)


def _parse_bound(where: str, spec: dict[str, Any]) -> tuple[str, float, str]:
    """(min|max, the bound, the comparison) of one gate: exactly one bound, a matching comparison."""
    has_min, has_max = "min" in spec, "max" in spec
    if has_min == has_max:
        raise BadInput(f"{where}: needs exactly one of 'min' or 'max' ({'both' if has_min else 'neither'} given)")
    bound_key = "min" if has_min else "max"
    bound = _bound_number(spec[bound_key], f"{where}.{bound_key}")
    comparison = spec.get("comparison", "gte" if has_min else "lte")
    if comparison not in COMPARISONS:
        raise BadInput(
            f"{where}.comparison: unknown comparison {comparison!r} (expected one of {', '.join(sorted(COMPARISONS))})"
        )
    if COMPARISONS[comparison][0] != bound_key:
        raise BadInput(f"{where}.comparison: {comparison!r} does not go with '{bound_key}' "
                       f"(min takes gte/gt, max takes lte/lt)")
    return bound_key, bound, comparison


def parse_threshold_text(text: str, path: str = "<thresholds>") -> ThresholdFile:
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(f"{path}:{where} not valid YAML ({problem})") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{path}: top level must be a mapping with a 'gates' key")
    unknown = sorted(set(map(str, doc)) - FILE_KEYS)
    if unknown:
        raise BadInput(f"{path}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(FILE_KEYS))})")
    gates_doc = doc.get("gates")
    if not isinstance(gates_doc, dict) or not gates_doc:
        raise BadInput(f"{path}: 'gates' must be a non-empty mapping of gate name -> gate")
    gates = [_parse_gate(path, name, spec) for name, spec in gates_doc.items()]
    file_description = doc.get("description", "")
    if not isinstance(file_description, str):
        raise BadInput(f"{path}: description: must be a string")
    return ThresholdFile(path=path, gates=tuple(gates), description=file_description)


def load_threshold_file(path: str | Path, flag: str = "--threshold-file") -> ThresholdFile:
    p = Path(path)
    return parse_threshold_text(inputs.read_text(p, flag), str(p))


# -- baselines --------------------------------------------------------------------


def derive_deltas(metrics: dict[str, Any], baseline_metrics: dict[str, Any]) -> dict[str, float]:
    """`X_delta_vs_baseline = X - baseline[X]` for every X that is a number in both, and
    `X_ratio_vs_baseline = X / baseline[X]` where the baseline value is also positive."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key.endswith(DERIVED_SUFFIXES):
            continue
        base = baseline_metrics.get(key)
        if is_number(value) and is_number(base):
            out[key + DELTA_SUFFIX] = float(value) - float(base)
            if key.endswith("_score"):
                out[key[: -len("_score")] + DELTA_SUFFIX] = float(value) - float(base)
            if float(base) > 0:
                out[key + RATIO_SUFFIX] = float(value) / float(base)
    return out


def derived_from(metric: str, metrics: dict[str, Any]) -> str | None:
    """The measured metric a derived (`*_delta_vs_baseline`, `*_ratio_vs_baseline`) name compares."""
    if metric.endswith(DELTA_SUFFIX):
        return delta_base_metric(metric, metrics)
    if metric.endswith(RATIO_SUFFIX):
        return metric[: -len(RATIO_SUFFIX)]
    return None


def _missing_reason(metric: str, metrics: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    """Why a gate's metric is absent, in words a reader of the approval page can act on."""
    source = derived_from(metric, metrics)
    if source is None:
        return f"metric {metric} missing from results: fails closed"
    if source not in metrics:
        return f"metric {metric} needs {source}, which the results do not have: fails closed"
    if baseline is None:
        return f"metric {metric} missing from results (pass --baseline to derive it): fails closed"
    base = (baseline.get("metrics") or {}).get(source)
    note = (baseline.get("meta") or {}).get("note")
    if base is None:
        why = f" ({note})" if note else ""
        return (f"no baseline measurement of {source} to compare with{why}; no bound is invented: "
                f"fails closed")
    return f"baseline {source} is {base!r}, nothing to compare against: fails closed"


def delta_base_metric(delta_metric: str, metrics: dict[str, Any]) -> str:
    """The metric a `*_delta_vs_baseline` name refers to (`quality` -> `quality_score` if that exists)."""
    base = delta_metric[: -len(DELTA_SUFFIX)]
    return base if base in metrics or base + "_score" not in metrics else base + "_score"


def per_sample_values(results: dict[str, Any] | None, metric: str) -> list[float]:
    """Per-sample numbers for `metric` from `samples[*].scores[metric]`; errored samples are skipped."""
    if not results:
        return []
    values: list[float] = []
    for sample in results.get("samples") or []:
        if not isinstance(sample, dict) or sample.get("error"):
            continue
        scores = sample.get("scores")
        if isinstance(scores, dict) and is_number(scores.get(metric)):
            values.append(float(scores[metric]))
    return values


def bootstrap_bound(
    values: list[float], confidence: float, lower: bool, baseline_values: list[float] | None = None
) -> float:
    """One-sided percentile-bootstrap bound of the mean (or of mean - baseline mean).

    Deterministic (fixed seed) so a gate verdict can be reproduced from the same files.
    """
    rng = random.Random(BOOTSTRAP_SEED)
    n = len(values)
    stats: list[float] = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        mean = sum(values[rng.randrange(n)] for _ in range(n)) / n
        if baseline_values:
            m = len(baseline_values)
            mean -= sum(baseline_values[rng.randrange(m)] for _ in range(m)) / m
        stats.append(mean)
    stats.sort()
    q = (1.0 - confidence) if lower else confidence
    idx = min(len(stats) - 1, max(0, math.floor(q * len(stats))))
    return stats[idx]


# -- judging ----------------------------------------------------------------------


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "infinite"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    return f"not a number ({type(value).__name__})"


def judge_gate(
    gate: Gate,
    metrics: dict[str, Any],
    results: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
) -> GateVerdict:
    verdict = GateVerdict(name=gate.name, metric=gate.metric, value=None, bound=gate.bound,
                          comparison=gate.comparison, passed=False, reason="", description=gate.description,
                          confidence=gate.confidence)
    base_metrics = (baseline or {}).get("metrics") or {}
    if gate.metric.endswith(DELTA_SUFFIX):
        verdict.delta_vs_baseline = metrics.get(gate.metric) if is_number(metrics.get(gate.metric)) else None
    elif gate.metric.endswith(RATIO_SUFFIX):
        source = gate.metric[: -len(RATIO_SUFFIX)]
        if is_number(base_metrics.get(source)):
            verdict.baseline_value = float(base_metrics[source])
    elif gate.metric in base_metrics and is_number(base_metrics[gate.metric]) and is_number(metrics.get(gate.metric)):
        verdict.baseline_value = float(base_metrics[gate.metric])
        verdict.delta_vs_baseline = float(metrics[gate.metric]) - verdict.baseline_value
    if gate.metric not in metrics:
        verdict.reason = _missing_reason(gate.metric, metrics, baseline)
        return verdict
    raw = metrics[gate.metric]
    if not is_number(raw):
        verdict.reason = f"metric {gate.metric} is {_describe(raw)}: fails closed"
        return verdict
    value = float(raw)
    verdict.value = value
    judged = value
    if gate.confidence is not None:
        if gate.metric.endswith(DELTA_SUFFIX):
            base_name = delta_base_metric(gate.metric, metrics)
            cand, base = per_sample_values(results, base_name), per_sample_values(baseline, base_name)
            if not cand or not base:
                verdict.reason = (f"confidence {gate.confidence} needs per-sample {base_name} scores in results "
                                  f"and baseline: fails closed")
                return verdict
            judged = bootstrap_bound(cand, gate.confidence, gate.is_lower_bound, base)
        else:
            cand = per_sample_values(results, gate.metric)
            if not cand:
                verdict.reason = f"confidence {gate.confidence} needs per-sample {gate.metric} scores: fails closed"
                return verdict
            judged = bootstrap_bound(cand, gate.confidence, gate.is_lower_bound)
        verdict.judged_value = judged
    verdict.passed = gate.holds(judged)
    shown = f"{judged:.4g}" + (f" ({'lower' if gate.is_lower_bound else 'upper'} {gate.confidence:.0%} bound "
                               f"of {value:.4g})" if gate.confidence is not None else "")
    verdict.reason = f"{gate.metric} {shown} {gate.symbol} {gate.bound:g}" + ("" if verdict.passed else " is false")
    return verdict


def evaluate(
    thresholds: ThresholdFile, results: dict[str, Any], baseline: dict[str, Any] | None = None
) -> Verdict:
    """Judge every gate. Derived deltas from an explicit baseline replace carried ones."""
    metrics = dict(results.get("metrics") or {})
    if baseline is not None:
        metrics.update(derive_deltas(metrics, baseline.get("metrics") or {}))
    gates = [judge_gate(g, metrics, results, baseline) for g in thresholds.gates]
    return Verdict(passed=all(g.passed for g in gates), gates=gates)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def markdown_report(verdict: Verdict, title: str, links: dict[str, str] | None = None) -> str:
    """A table fit for an approval page: each gate, value, bound, delta vs baseline, result."""
    status = "PASSED" if verdict.passed else f"FAILED ({len(verdict.failed)} of {len(verdict.gates)} gates)"
    lines = [f"### {title}: {status}", "",
             "| Gate | Metric | Value | Bound | Δ vs baseline | Result |",
             "|---|---|---|---|---|---|"]
    for g in verdict.gates:
        symbol = COMPARISONS[g.comparison][1]
        value = _fmt(g.value)
        if g.judged_value is not None:
            value += f" (CI bound {_fmt(g.judged_value)})"
        delta = "—" if g.delta_vs_baseline is None else f"{g.delta_vs_baseline:+.4g}"
        result = "pass" if g.passed else "**FAIL**"  # plain text: approval pages may lack emoji fonts
        lines.append(f"| {g.name} | `{g.metric}` | {value} | {symbol} {g.bound:g} | {delta} | {result} |")
    failed = verdict.failed
    if failed:
        lines += ["", "Failed gates:"] + [f"- **{g.name}**: {g.reason}" for g in failed]
    for label, url in (links or {}).items():
        lines.append(f"- [{label}]({url})")
    return "\n".join(lines) + "\n"
