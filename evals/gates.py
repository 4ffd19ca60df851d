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
fails and says why. A file that is not this shape is bad input (BadInput, exit 2), and so
is a gate on a metric its suite never produces (``check_metrics``, evals.catalogue): a
typo, not a failed run; a metric the suite produces that a run lacks still fails closed.

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

from evals import catalogue, inputs, paired
from evals.catalogue import DELTA_SUFFIX, DERIVED_SUFFIXES, RATIO_SUFFIX
from evals.errors import BadInput
from evals.results import is_number

COMPARISONS: dict[str, tuple[str, str]] = {
    # comparison: (bound key it goes with, symbol)
    "gte": ("min", ">="),
    "gt": ("min", ">"),
    "lte": ("max", "<="),
    "lt": ("max", "<"),
}
GATE_KEYS = {"metric", "min", "max", "comparison", "description", "confidence", "on", "mde"}
DECIDE_ON = ("value", "ci_lower", "ci_upper")
FILE_KEYS = {"gates", "description", "profile"}
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
    on: str = "value"  # value | ci_lower | ci_upper: what the bound is compared with
    mde: float | None = None  # the regression this gate must detect (sample-size check)

    @property
    def symbol(self) -> str:
        return COMPARISONS[self.comparison][1]

    @property
    def is_lower_bound(self) -> bool:
        return COMPARISONS[self.comparison][0] == "min"

    @property
    def named_regression(self) -> float | None:
        """The drop a delta gate names: ``mde``, else the distance of a negative ``min`` from 0."""
        if self.mde is not None:
            return self.mde
        if self.metric.endswith(DELTA_SUFFIX) and self.is_lower_bound and self.bound < 0:
            return -self.bound
        return None

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
    profile: str = ""


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
    judged_value: float | None = None  # the number compared with the bound (CI bound when `on` says so)
    on: str = "value"
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    method: str = ""
    p_value: float | None = None
    delta_ci_low: float | None = None
    delta_ci_high: float | None = None
    delta_n: int | None = None
    delta_method: str = ""
    status: str = "fail"  # pass | fail | not judged | baseline established
    notes: list[str] = field(default_factory=list)

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
    """SafeLoader that refuses duplicate keys (a second `min:` silently winning is a bug) and
    aliases: a threshold file is a short list of gates, and an `*alias` only hides a copied
    gate or, nested, a "billion laughs" bomb that expands when the verdict is written."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML ships no annotations
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} is not allowed in a threshold "
                                              "file (write each gate out)", event.start_mark)
        return super().compose_node(parent, index)


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
    # YAML 1.1 reads a bare `on:` key as the boolean True; in a gate it can only mean `on`.
    spec = {("on" if key is True else key): value for key, value in spec.items()}
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
    on = spec.get("on", "value")
    if on not in DECIDE_ON:
        raise BadInput(f"{where}.on: {on!r} must be one of {', '.join(DECIDE_ON)}")
    if on != "value" and confidence is not None:
        raise BadInput(f"{where}: 'on: {on}' (the 95 % interval) and 'confidence' do not go together")
    mde = spec.get("mde")
    if mde is not None and not (is_number(mde) and 0 < float(mde) < 1):
        raise BadInput(f"{where}.mde: {mde!r} must be a number in (0, 1): the regression the gate must detect")
    return Gate(name=name, metric=metric.strip(), bound=bound, comparison=comparison,
                description=description, confidence=float(confidence) if confidence is not None else None,
                on=on, mde=float(mde) if mde is not None else None)


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
    profile = doc.get("profile", "")
    if not isinstance(profile, str):
        raise BadInput(f"{path}: profile: must be a string")
    return ThresholdFile(path=path, gates=tuple(gates), description=file_description, profile=profile)


def load_threshold_file(path: str | Path, flag: str = "--threshold-file") -> ThresholdFile:
    p = Path(path)
    return parse_threshold_text(inputs.read_text(p, flag), str(p))


def check_metrics(thresholds: ThresholdFile, suite: str | None) -> None:
    """Refuse a gate on a metric ``suite`` never produces: BadInput naming the file and
    ``gates.NAME.metric`` (exit 2). A typo is bad input; a produced metric that one run's
    results lack is not, it fails closed when judged (exit 1).

    ``suite`` None, or a suite no producer declares (evals.catalogue): nothing to check
    against, every gate is judged as it is and a missing metric fails closed.
    """
    names = catalogue.for_suite(suite)
    if names is None:
        return
    for gate in thresholds.gates:
        if not names.knows(gate.metric):
            raise BadInput(f"{thresholds.path}: gates.{gate.name}.metric: {names.unknown(gate.metric)}")


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

NOT_JUDGED = "not judged"
BASELINE_ESTABLISHED = "baseline established"
PLAN_ALPHA, PLAN_POWER = 0.05, 0.95  # the sample-size check: a drop of `mde` found 95 % of the time at 5 %


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


def per_item(results: dict[str, Any] | None, metric: str) -> dict[str, float]:
    """{item id: score} for `metric` (errored samples skipped): what paired comparisons read."""
    out: dict[str, float] = {}
    for sample in (results or {}).get("samples") or []:
        if not isinstance(sample, dict) or sample.get("error") or sample.get("id") is None:
            continue
        scores = sample.get("scores")
        if isinstance(scores, dict) and is_number(scores.get(metric)):
            out[str(sample["id"])] = float(scores[metric])
    return out


def not_judged_reason(results: dict[str, Any] | None, metric: str) -> str | None:
    """Why a results file says `metric` was not judged (results' ``not_judged`` section), or None."""
    section = (results or {}).get("not_judged") or {}
    if not isinstance(section, dict):
        return None
    reason = section.get(metric)
    if reason is None:
        base = metric[: -len(DELTA_SUFFIX)] if metric.endswith(DELTA_SUFFIX) else None
        reason = section.get(base) if base else None
    return str(reason) if reason is not None else None


def _pairing_problem(results: dict[str, Any] | None, baseline: dict[str, Any]) -> str | None:
    """Why the champion's answers are not the same items as the candidate's, or None."""
    bmeta, cmeta = baseline.get("meta") or {}, (results or {}).get("meta") or {}
    stale = bmeta.get("pairing_stale")
    if stale:
        return f"the champion's recorded answers cannot be reused ({stale})"
    cds, bds = cmeta.get("dataset_sha256"), bmeta.get("dataset_sha256")
    if cds and bds and cds != bds:
        return (f"the champion answered dataset {str(bds)[:12]}, the candidate {str(cds)[:12]}: not the same items; "
                f"re-evaluate the champion on this dataset")
    return None


def _paired_evidence(gate: Gate, metrics: dict[str, Any], results: dict[str, Any] | None,
                     baseline: dict[str, Any] | None) -> tuple[paired.PairedResult | None, str | None]:
    """The paired difference behind a delta gate; (None, None) when neither side has per-item data."""
    base_name = delta_base_metric(gate.metric, metrics) if gate.metric.endswith(DELTA_SUFFIX) else gate.metric
    cand = per_item(results, base_name)
    champ = per_item(baseline, base_name)
    if not cand and not champ:
        return None, None
    if not champ and not is_number(((baseline or {}).get("metrics") or {}).get(base_name)):
        return None, None  # no baseline measurement at all: the missing-metric path says why
    if not cand or not champ:
        side = "candidate" if not cand else "champion"
        return None, f"the {side}'s results have no per-item {base_name}: the two cannot be paired; fails closed"
    problem = _pairing_problem(results, baseline or {})
    if problem:
        return None, f"{problem}: fails closed"
    ids, a, b = paired.pair_by_id(cand, champ)
    if not ids:
        return None, f"no item was answered by both the candidate and the champion ({base_name}): fails closed"
    return paired.compare(a, b), None


def _interval(metric: str, metrics: dict[str, Any], results: dict[str, Any] | None
              ) -> tuple[int | None, float | None, float | None, str]:
    """(n, CI low, CI high, method) of an absolute metric, from the results or its per-item values."""
    from evals.suites import stats

    values = per_sample_values(results, metric)
    binary = paired.is_binary(values)
    lo, hi, n = metrics.get(f"{metric}_ci_low"), metrics.get(f"{metric}_ci_high"), metrics.get(f"{metric}_n")
    if is_number(lo) and is_number(hi):
        count = int(n) if is_number(n) else (len(values) or None)
        return count, float(lo), float(hi), "Wilson 95 %" if binary or not values else "Student-t 95 %"
    if values:
        lo, hi = stats.wilson_interval(sum(values), len(values)) if binary else stats.t_interval(values)
        return len(values), lo, hi, "Wilson 95 %" if binary else "Student-t 95 %"
    total = next((metrics[k] for k in ("samples_total", "requests_total", "requests") if is_number(metrics.get(k))),
                 None)
    value = metrics.get(metric)
    if total and metric.endswith("_rate") and is_number(value) and 0 <= float(value) <= 1:
        lo, hi = stats.wilson_interval(float(value) * float(total), int(total))
        return int(total), lo, hi, "Wilson 95 % (from the rate and the request count)"
    return (int(total) if total else None), None, None, "point value (no per-item data)"


def _sample_size_note(gate: Gate, evidence: paired.PairedResult) -> str | None:
    """Say when the paired items are too few to detect the regression the gate names."""
    drop = gate.named_regression
    if drop is None:
        return None
    if evidence.discordant is not None:
        sd = paired.binary_difference_sd(drop, evidence.discordant / evidence.n)
    else:
        sd = evidence.sd or 0.0
    if sd <= 0:
        return None
    needed = paired.paired_n(drop, sd, alpha=PLAN_ALPHA, power=PLAN_POWER)
    if evidence.n >= needed:
        return None
    return (f"dataset too small: {evidence.n} paired items; detecting a drop of {drop:g} with power "
            f"{PLAN_POWER:g} at alpha {PLAN_ALPHA:g} needs {needed} (python -m evals.plan)")


def _fill_comparison(verdict: GateVerdict, gate: Gate, metrics: dict[str, Any], results: dict[str, Any] | None,
                     baseline: dict[str, Any] | None) -> None:
    """Δ vs the champion (with its paired interval where both sides have per-item data) for display."""
    base_metrics = (baseline or {}).get("metrics") or {}
    if gate.metric.endswith(RATIO_SUFFIX):
        source = gate.metric[: -len(RATIO_SUFFIX)]
        if is_number(base_metrics.get(source)):
            verdict.baseline_value = float(base_metrics[source])
        return
    if gate.metric.endswith(DELTA_SUFFIX):
        verdict.delta_vs_baseline = metrics.get(gate.metric) if is_number(metrics.get(gate.metric)) else None
        return
    if is_number(base_metrics.get(gate.metric)) and is_number(metrics.get(gate.metric)):
        verdict.baseline_value = float(base_metrics[gate.metric])
        verdict.delta_vs_baseline = float(metrics[gate.metric]) - verdict.baseline_value
        evidence, _ = _paired_evidence(gate, metrics, results, baseline)
        if evidence is not None:
            verdict.delta_vs_baseline, verdict.delta_ci_low, verdict.delta_ci_high = (
                evidence.value, evidence.ci_low, evidence.ci_high)
            verdict.delta_n, verdict.delta_method = evidence.n, evidence.method


def _establishes(gate: Gate, metrics: dict[str, Any], baseline: dict[str, Any] | None) -> bool:
    """A comparison gate with nothing to compare against, on a run that is allowed to be the first."""
    source = derived_from(gate.metric, metrics)
    if source is None or source not in metrics:
        return False
    return not is_number(((baseline or {}).get("metrics") or {}).get(source))


def _decide(verdict: GateVerdict, gate: Gate) -> None:
    """Compare the number `on` names with the bound; an interval that is not there fails closed."""
    on = gate.on if gate.confidence is None else ("ci_lower" if gate.is_lower_bound else "ci_upper")
    pick = {"value": verdict.value, "ci_lower": verdict.ci_low, "ci_upper": verdict.ci_high}[on]
    if pick is None:
        verdict.reason = f"gate decides on {on} but {gate.metric} has no 95 % interval ({verdict.method}): fails closed"
        return
    verdict.judged_value = float(pick)
    verdict.passed = gate.holds(verdict.judged_value)
    verdict.status = "pass" if verdict.passed else "fail"
    shown = f"{pick:.4g}" if on == "value" else f"{on.replace('_', ' ')} {pick:.4g} (value {verdict.value:.4g})"
    verdict.reason = f"{gate.metric} {shown} {gate.symbol} {gate.bound:g}" + ("" if verdict.passed else " is false")


def _legacy_confidence(verdict: GateVerdict, gate: Gate, metrics: dict[str, Any], results: dict[str, Any] | None,
                       baseline: dict[str, Any] | None) -> None:
    """`confidence:` gates: a one-sided bootstrap bound of the mean (absolute metrics)."""
    assert gate.confidence is not None and verdict.value is not None
    cand = per_sample_values(results, gate.metric)
    if not cand:
        verdict.reason = f"confidence {gate.confidence} needs per-sample {gate.metric} scores: fails closed"
        return
    judged = bootstrap_bound(cand, gate.confidence, gate.is_lower_bound)
    verdict.judged_value = judged
    verdict.passed = gate.holds(judged)
    verdict.status = "pass" if verdict.passed else "fail"
    side = "lower" if gate.is_lower_bound else "upper"
    verdict.reason = (f"{gate.metric} {judged:.4g} ({side} {gate.confidence:.0%} bound of {verdict.value:.4g}) "
                      f"{gate.symbol} {gate.bound:g}" + ("" if verdict.passed else " is false"))


def judge_gate(
    gate: Gate,
    metrics: dict[str, Any],
    results: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
    *,
    establish_baseline: bool = False,
) -> GateVerdict:
    """One gate: the value it rests on, with n, 95 % interval and method; fail closed on anything missing.

    A `*_delta_vs_baseline` gate rests on the paired per-item difference of candidate and
    champion when both have per-item scores (McNemar exact / paired bootstrap).
    """
    verdict = GateVerdict(name=gate.name, metric=gate.metric, value=None, bound=gate.bound,
                          comparison=gate.comparison, passed=False, reason="", description=gate.description,
                          confidence=gate.confidence, on=gate.on)
    _fill_comparison(verdict, gate, metrics, results, baseline)
    skipped = not_judged_reason(results, gate.metric)
    if skipped is not None and not is_number(metrics.get(gate.metric)):
        verdict.status, verdict.method = NOT_JUDGED, NOT_JUDGED
        verdict.reason = f"{gate.metric} {NOT_JUDGED} ({skipped}): fails closed"
        return verdict
    if gate.metric.endswith(DELTA_SUFFIX):
        evidence, problem = _paired_evidence(gate, metrics, results, baseline)
        if problem:
            verdict.reason, verdict.method = problem, "paired (not possible)"
            return verdict
        if evidence is not None:
            verdict.value, verdict.n, verdict.ci_low, verdict.ci_high = (evidence.value, evidence.n,
                                                                         evidence.ci_low, evidence.ci_high)
            verdict.method, verdict.p_value = evidence.method, evidence.p_value
            verdict.delta_vs_baseline, verdict.delta_ci_low, verdict.delta_ci_high = (
                evidence.value, evidence.ci_low, evidence.ci_high)
            verdict.delta_n, verdict.delta_method = evidence.n, evidence.method
            note = _sample_size_note(gate, evidence)
            verdict.notes += [note] if note else []
            _decide(verdict, gate)
            return verdict
    if gate.metric not in metrics:
        if establish_baseline and _establishes(gate, metrics, baseline):
            verdict.passed, verdict.status, verdict.method = True, BASELINE_ESTABLISHED, BASELINE_ESTABLISHED
            verdict.reason = (f"no earlier measurement of {derived_from(gate.metric, metrics)}: this run "
                              f"establishes the baseline")
            return verdict
        verdict.reason = _missing_reason(gate.metric, metrics, baseline)
        return verdict
    raw = metrics[gate.metric]
    if not is_number(raw):
        verdict.reason = f"metric {gate.metric} is {_describe(raw)}: fails closed"
        return verdict
    verdict.value = float(raw)
    if gate.metric.endswith(DERIVED_SUFFIXES):
        verdict.method = "difference of point values (no per-item data)" if gate.metric.endswith(DELTA_SUFFIX) \
            else "ratio of point values, same machine"
        verdict.n = None
    else:
        verdict.n, verdict.ci_low, verdict.ci_high, verdict.method = _interval(gate.metric, metrics, results)
    if gate.confidence is not None:
        _legacy_confidence(verdict, gate, metrics, results, baseline)
    else:
        _decide(verdict, gate)
    return verdict


def evaluate(
    thresholds: ThresholdFile, results: dict[str, Any], baseline: dict[str, Any] | None = None,
    *, establish_baseline: bool = False,
) -> Verdict:
    """Judge every gate. Derived deltas from an explicit baseline replace carried ones.

    ``establish_baseline``: comparison gates with no earlier measurement pass as "baseline
    established" (a champion's first nightly, a fresh install's first evaluate); a
    baseline file can also say so itself (``meta.establishes_baseline``, written only by
    ``fetch_baseline`` for the champion's own nightly).
    """
    metrics = dict(results.get("metrics") or {})
    if baseline is not None:
        metrics.update(derive_deltas(metrics, baseline.get("metrics") or {}))
    establish = establish_baseline or bool(((baseline or {}).get("meta") or {}).get("establishes_baseline"))
    gates = [judge_gate(g, metrics, results, baseline, establish_baseline=establish) for g in thresholds.gates]
    return Verdict(passed=all(g.passed for g in gates), gates=gates)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _ci(lo: float | None, hi: float | None) -> str:
    return "—" if lo is None or hi is None else f"[{lo:.3g}, {hi:.3g}]"


def _result_cell(g: GateVerdict) -> str:
    if g.status == BASELINE_ESTABLISHED:
        return BASELINE_ESTABLISHED
    if g.status == NOT_JUDGED:
        return f"**FAIL** ({NOT_JUDGED})"
    return "pass" if g.passed else "**FAIL**"  # plain text: approval pages may lack emoji fonts


def markdown_report(verdict: Verdict, title: str, links: dict[str, str] | None = None) -> str:
    """A table fit for an approval page: each gate's n, value, 95 % interval, bound, what decides,
    the paired delta vs the champion with its interval, the method and the result."""
    status = "PASSED" if verdict.passed else f"FAILED ({len(verdict.failed)} of {len(verdict.gates)} gates)"
    lines = [f"### {title}: {status}", "",
             "| Gate | Metric | n | Value | 95% CI | Bound | Decides on | Δ vs champion (95% CI) | Method | Result |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for g in verdict.gates:
        symbol = COMPARISONS[g.comparison][1]
        delta = "—" if g.delta_vs_baseline is None else f"{g.delta_vs_baseline:+.4g}"
        if g.delta_ci_low is not None and g.delta_ci_high is not None and not g.metric.endswith(DELTA_SUFFIX):
            delta += f" {_ci(g.delta_ci_low, g.delta_ci_high)}"
        on = g.on if g.confidence is None else f"{g.confidence:.0%} bootstrap bound"
        lines.append(f"| {g.name} | `{g.metric}` | {g.n if g.n is not None else '—'} | {_fmt(g.value)} | "
                     f"{_ci(g.ci_low, g.ci_high)} | {symbol} {g.bound:g} | {on} | {delta} | {g.method or '—'} | "
                     f"{_result_cell(g)} |")
    failed = verdict.failed
    if failed:
        lines += ["", "Failed gates:"] + [f"- **{g.name}**: {g.reason}" for g in failed]
    established = [g for g in verdict.gates if g.status == BASELINE_ESTABLISHED]
    if established:
        lines += ["", "Baseline established:"] + [f"- **{g.name}**: {g.reason}" for g in established]
    notes = [(g.name, n) for g in verdict.gates for n in g.notes]
    if notes:
        lines += ["", "Notes:"] + [f"- **{name}**: {note}" for name, note in notes]
    for label, url in (links or {}).items():
        lines.append(f"- [{label}]({url})")
    return "\n".join(lines) + "\n"
