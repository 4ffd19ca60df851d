"""evals.catalogue: every producer's metric names, and every gate file checked against them.

Both directions: each producer, run, writes only names its catalogue declares (a new
metric must be declared, or a gate on it would be refused as a typo), and every shipped
threshold file (and the gate files the test suites write) names only known metrics (a
typo in one is caught here, not in a promotion that fails closed for no visible reason).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from evals import catalogue, contract, gates
from evals.catalogue import CANARY, DRIFT, LATENCY, QUALITY, SAFETY
from evals.errors import BadInput
from tests.conftest import REPO_ROOT

THRESHOLD_FILES = sorted(p for p in (REPO_ROOT / "thresholds").rglob("*.yaml") if not p.name.endswith("-policy.yaml"))


# -- the shipped threshold files ---------------------------------------------------------------------


def test_the_shipped_threshold_files_are_all_found() -> None:
    names = {str(p.relative_to(REPO_ROOT)) for p in THRESHOLD_FILES}
    assert {"thresholds/quality.yaml", "thresholds/safety.yaml", "thresholds/latency.yaml", "thresholds/canary.yaml",
            "thresholds/drift.yaml", "thresholds/drift.warn.yaml", "thresholds/embedded/quality.yaml",
            "thresholds/embedded/safety.yaml", "thresholds/embedded/latency.yaml",
            "thresholds/embedded/canary.yaml"} <= names


@pytest.mark.parametrize("path", THRESHOLD_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_shipped_threshold_file_names_only_metrics_its_suite_produces(path: Path) -> None:
    suite = catalogue.suite_for(None, path)  # as gate_check picks it for a results file without meta.suite
    assert suite is not None, f"{path.name}: no suite of that name (evals.catalogue.CATALOGUES)"
    thresholds = gates.load_threshold_file(path)
    unknown = [f"gates.{g.name}.metric: {g.metric}" for g in thresholds.gates
               if not catalogue.CATALOGUES[suite].knows(g.metric)]
    assert unknown == [], f"{path}: {unknown}"
    gates.check_metrics(thresholds, suite)


# -- the gate files the test suites write ------------------------------------------------------------

# Modules whose gate texts are about the parser or the engine (placeholder names such as `x`,
# deliberate typos), never handed to a suite's results as its gates.
PLACEHOLDER_MODULES = {"tests/evals/test_gates.py", "tests/evals/test_paired.py", "tests/evals/test_catalogue.py",
                       "tests/evals/test_gate_check_cli.py", "tests/faults/test_bad_input.py"}


def _test_gate_texts() -> list[tuple[str, str | None, str]]:
    """(where, suite or None, text) of every gate-file literal in tests/: a {"<suite>.yaml": text}
    entry gives its suite; a bare text must be a gate file of some suite."""
    found: list[tuple[str, str | None, str]] = []
    for path in sorted((REPO_ROOT / "tests").rglob("*.py")):
        rel = str(path.relative_to(REPO_ROOT))
        if rel in PLACEHOLDER_MODULES:
            continue
        tree = ast.parse(path.read_text())
        keyed: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (isinstance(key, ast.Constant) and isinstance(key.value, str) and key.value.endswith(".yaml")
                            and isinstance(value, ast.Constant) and isinstance(value.value, str)
                            and value.value.lstrip().startswith("gates:")):
                        found.append((f"{rel}:{value.lineno} {key.value}", catalogue.suite_for(None, key.value),
                                      value.value))
                        keyed.add(id(value))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in keyed
                    and node.value.lstrip().startswith("gates:")):
                found.append((f"{rel}:{node.lineno}", None, node.value))
    return found


TEST_GATE_TEXTS = _test_gate_texts()


def test_the_test_suites_gate_files_are_found() -> None:
    where = {w.split(":")[0] for w, _, _ in TEST_GATE_TEXTS}
    assert {"tests/dags/promotion_stack.py", "tests/dags/test_drift_retrain_e2e.py", "tests/faults/test_serving.py",
            "tests/plugins/test_rollout_dag.py", "tests/evals/canary/test_canary.py"} <= where
    assert sum(1 for _, suite, _ in TEST_GATE_TEXTS if suite == "quality") >= 2  # promotion_stack, drift e2e


@pytest.mark.parametrize(("where", "suite", "text"), TEST_GATE_TEXTS, ids=[w for w, _, _ in TEST_GATE_TEXTS])
def test_every_gate_file_the_tests_write_names_known_metrics(where: str, suite: str | None, text: str) -> None:
    thresholds = gates.parse_threshold_text(text.lstrip(), where)
    metrics = [g.metric for g in thresholds.gates]
    if suite is not None:
        assert [m for m in metrics if not catalogue.CATALOGUES[suite].knows(m)] == [], where
    else:
        fits = [s for s, c in catalogue.CATALOGUES.items() if all(c.knows(m) for m in metrics)]
        assert fits, f"{where}: no suite produces all of {metrics}"


# -- the catalogue itself ----------------------------------------------------------------------------


def test_every_judged_suite_has_a_catalogue() -> None:
    assert set(contract.SUITES) | {"canary", "drift"} == set(catalogue.CATALOGUES)
    for suite, names in catalogue.CATALOGUES.items():
        assert names.suite == suite and names.producers and names.shown
        assert not any(n.endswith(catalogue.DERIVED_SUFFIXES) for n in names.names - {"quality_delta_vs_baseline"})


def test_the_catalogue_imports_nothing_from_outside_the_standard_library() -> None:
    tree = ast.parse(Path(catalogue.__file__).read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in modules if m.split(".")[0] not in sys.stdlib_module_names} == set()


def test_per_task_and_per_category_names_follow_the_dataset_schema() -> None:
    schema = yaml.safe_load((REPO_ROOT / "evals" / "datasets" / "schema.yaml").read_text())["suites"]
    assert tuple(schema["quality"]["labels"]["task"]) == catalogue.QUALITY_TASKS
    assert tuple(schema["safety"]["labels"]["category"]) == catalogue.SAFETY_CATEGORIES


def test_drift_measures_exactly_the_catalogued_features() -> None:
    from evals.drift import features

    assert features.NUMERIC is catalogue.DRIFT_NUMERIC and features.CATEGORICAL is catalogue.DRIFT_CATEGORICAL


@pytest.mark.parametrize(("names", "metric"), [
    (QUALITY, "task_success_rate_delta_vs_baseline"),
    (QUALITY, "quality_delta_vs_baseline"),  # the short name of quality_score's delta
    (QUALITY, "quality_score_delta_vs_baseline"),
    (QUALITY, "token_f1_ratio_vs_baseline"),
    (QUALITY, "task_success_rate_grounded"),
    (SAFETY, "guardrail_no_pii_anywhere_violation_rate"),  # a rule id of the policy file
    (SAFETY, "refusal_rate_jailbreak_delta_vs_baseline"),
    (LATENCY, "latency_p95_ms_ratio_vs_baseline"),
    (LATENCY, "requests_per_second_ratio_vs_baseline"),
    (CANARY, "canary_quality"),
    (DRIFT, "topic_psi_drift"),
    (DRIFT, "refusal_rate_increase_window"),  # --persistence keeps the held-back value
])
def test_derived_and_patterned_names_of_known_bases_are_known(names: catalogue.Catalogue, metric: str) -> None:
    assert names.knows(metric)


@pytest.mark.parametrize(("names", "metric"), [
    (QUALITY, "groundednes_score"),
    (QUALITY, "task_sucess_rate"),
    (QUALITY, "refusal_rate"),  # safety's, not quality's
    (QUALITY, "task_success_rate_delta_vs_baseline_delta_vs_baseline"),  # a derived name is not a base
    (QUALITY, "groundedness_delta_vs_basline"),
    (QUALITY, "task_success_rate_translation"),  # no such task in the dataset schema
    (LATENCY, "latency_p90_ms"),
    (DRIFT, "prompt_token_psi_drift"),
    (DRIFT, "status_ks_drift"),  # categorical features have no KS test
    (DRIFT, "drift_checks_passed_window"),  # never held back
    (CANARY, "canary_latency_p95_ms"),
])
def test_typos_and_other_suites_names_are_unknown(names: catalogue.Catalogue, metric: str) -> None:
    assert not names.knows(metric)
    message = names.unknown(metric)
    assert f"unknown metric {metric!r} for the {names.suite} suite" in message and "\n" not in message


def test_the_message_suggests_the_closest_name() -> None:
    assert "did you mean 'groundedness_score'?" in QUALITY.unknown("groundednes_score")
    assert "did you mean 'task_success_rate_delta_vs_baseline'?" in QUALITY.unknown(
        "task_success_rate_delta_vs_basline")
    assert "did you mean" not in QUALITY.unknown("completely_different")


def test_the_suite_comes_from_the_results_then_the_file_stem() -> None:
    assert catalogue.suite_for("safety", "thresholds/quality.yaml") == "safety"  # what produced the results
    assert catalogue.suite_for(None, "thresholds/embedded/quality.yaml") == "quality"
    assert catalogue.suite_for(None, "/x/drift.warn.yaml") == "drift"
    assert catalogue.suite_for("train", "t/latency.yaml") == "latency"  # an uncatalogued producer: the stem
    assert catalogue.suite_for(None, "/tmp/gates.yaml") is None and catalogue.suite_for(["x"], "g.yaml") is None


def test_check_metrics_names_the_file_and_the_gates_field() -> None:
    tf = gates.parse_threshold_text("gates:\n  ok: {metric: error_rate, max: 0.1}\n"
                                    "  fast: {metric: latency_p95_s, max: 2}\n", "thresholds/latency.yaml")
    with pytest.raises(BadInput, match=r"^thresholds/latency\.yaml: gates\.fast\.metric: unknown metric "
                                       r"'latency_p95_s' for the latency suite \(did you mean 'latency_p95_ms'\?"):
        gates.check_metrics(tf, "latency")
    gates.check_metrics(tf, None)  # no catalogue: nothing to check, judging fails closed
    gates.check_metrics(tf, "train")


# -- each producer writes only catalogued names -----------------------------------------------------


def test_the_benchmark_writes_exactly_the_latency_catalogue() -> None:
    from evals.loadgen import BenchmarkMetrics

    def bench(**shape: float | None) -> set[str]:
        values: dict[str, object] = {}
        for f in dataclasses.fields(BenchmarkMetrics):
            if f.name.endswith("_ms") and f.name not in ("latency_mean_ms", "ttft_mean_ms", "tpot_mean_ms"):
                values[f.name] = {50: 1.0, 95: 2.0, 99: 3.0}
            elif f.name == "errors_by_reason":
                values[f.name] = {}
            else:
                values[f.name] = 1
        values.update(shape)
        return set(BenchmarkMetrics(**values).as_metrics())  # type: ignore[arg-type]

    closed = bench(requested_rate_rps=None, requested_concurrency=8.0)
    open_loop = bench(requested_rate_rps=5.0, requested_concurrency=None)
    assert LATENCY.undeclared(closed | open_loop) == []
    assert closed | open_loop == set(LATENCY.names)


def test_the_replayed_canary_writes_exactly_its_catalogue() -> None:
    from evals.canary.stats import ArmStats, CanaryPolicy, decide

    verdict = decide(ArmStats(20, 1, (0.5,) * 19), ArmStats(20, 0, (0.6,) * 20), CanaryPolicy())
    assert set(verdict.metrics) == catalogue.CANARY_REPLAY_METRICS
    assert set(decide(ArmStats(), ArmStats(), CanaryPolicy()).metrics) == catalogue.CANARY_REPLAY_METRICS


def test_the_progressive_canary_writes_only_its_catalogue() -> None:
    from evals.canary.analysis import analyse
    from evals.canary.policy import load_policy
    from tests.evals.canary.test_canary_analysis import arm_data, fake_prometheus

    policy = load_policy(REPO_ROOT / "thresholds" / "embedded" / "canary-policy.yaml")
    healthy = analyse(policy, fake_prometheus(policy, {"canary": arm_data(), "stable": arm_data()}), model="m",
                      weight=25, window_s=30)
    assert set(healthy.metrics) == catalogue.CANARY_ANALYSIS_METRICS
    few = analyse(policy, fake_prometheus(policy, {"canary": arm_data(requests=1.0, scores=()),
                                                   "stable": arm_data()}), model="m", weight=25, window_s=30)
    assert CANARY.undeclared(few.metrics) == []


def _embed(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for all-MiniLM-L6-v2: a unit vector seeded by the text."""
    out = []
    for t in texts:
        v = np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=16)
        out.append(v / np.linalg.norm(v))
    return np.array(out, dtype=np.float32)


def test_drift_writes_exactly_its_catalogue_per_feature() -> None:
    from evals.drift import features, reference, synthetic
    from evals.drift.compare import compare

    ref = features.extract(synthetic.window(400, seed=1, with_text=True))
    cur = features.extract(synthetic.window(400, seed=2, with_text=True,
                                            shift=synthetic.Shift(new_language_share=0.2)))
    comp = compare(reference.summarise(ref, embed=_embed), cur, alpha=0.01, embed=_embed)
    written = set(comp.metrics) | {"drift_checks_passed", "reference_rows", "current_rows"}  # evals.drift.cli's
    assert DRIFT.undeclared(written) == []
    assert written == {n for n in DRIFT.names if not n.endswith("_window")}
