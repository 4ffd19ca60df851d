"""Nightly judging: which versions to evaluate, what counts as a regression, who hears of it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from evals.contract import SUITES

log = logging.getLogger("tollgate.nightly")


@dataclass(frozen=True)
class RegressionRule:
    """A nightly-over-nightly drift that is worth a page: `metric` moved the wrong way by more than `tolerance`."""

    suite: str
    metric: str
    higher_is_better: bool
    tolerance: float  # absolute for rates and scores, relative (fraction) when `relative`
    relative: bool = False

    def regressed(self, previous: float, current: float) -> bool:
        delta = current - previous
        if self.relative:
            delta = delta / previous if previous else 0.0
        return delta < -self.tolerance if self.higher_is_better else delta > self.tolerance


RULES = (
    RegressionRule("quality", "quality_score", True, 0.02),
    RegressionRule("quality", "task_success_rate", True, 0.02),
    RegressionRule("quality", "groundedness_score", True, 0.02),
    RegressionRule("safety", "refusal_rate", True, 0.02),
    RegressionRule("safety", "pii_leakage_rate", False, 0.0),
    RegressionRule("latency", "latency_p95_ms", False, 0.20, relative=True),
)


def compare_nightlies(previous: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]) -> list[str]:
    """Regressions of `current` vs `previous` ({suite: metrics}); pure, for tests."""
    alerts = []
    for rule in RULES:
        before = (previous.get(rule.suite) or {}).get(rule.metric)
        now = (current.get(rule.suite) or {}).get(rule.metric)
        if not isinstance(before, (int, float)) or not isinstance(now, (int, float)):
            continue
        if rule.regressed(float(before), float(now)):
            alerts.append(f"{rule.suite}/{rule.metric} regressed since the previous nightly: {before:.4g} -> {now:.4g}")
    return alerts


def nightly_targets(tracking_uri: str | None = None) -> list[dict[str, str]]:
    """Every registered model's champion, and its challenger when one is set."""
    from tollgate.mlflow import registry

    targets = []
    for alias in (registry.CHAMPION, registry.CHALLENGER):
        for model, version in sorted(registry.models_with_alias(alias, tracking_uri=tracking_uri).items()):
            targets.append({"model_name": model, "model_version": str(version), "alias": alias})
    return targets


def _suite_metrics(model: str, version: str, exclude_parent: str | None, tracking_uri: str | None) -> dict[str, dict]:
    """{suite: metrics} of the newest earlier nightly (model_evaluation) of this version."""
    from tollgate.mlflow import tracking

    c = tracking.client(tracking_uri)
    exp = c.get_experiment_by_name(tracking.experiment_name(model))
    if exp is None:
        return {}
    out: dict[str, dict] = {}
    for suite in SUITES:
        flt = (f"tags.`{tracking.TAG_KIND}` = '{tracking.KIND_SUITE}' and tags.`{tracking.TAG_VERSION}` = "
               f"{tracking.quote(version)} and tags.`{tracking.TAG_SUITE}` = '{suite}' and "
               f"tags.`{tracking.TAG_DAG_ID}` = 'model_evaluation'")
        for run in c.search_runs([exp.experiment_id], filter_string=flt, order_by=["attributes.start_time DESC"],
                                 max_results=5):
            if run.data.tags.get("mlflow.parentRunId") != exclude_parent:
                out[suite] = dict(run.data.metrics)
                break
    return out


def notify(subject: str, lines: list[str], *, context: dict[str, Any]) -> None:
    """Tell people (``tollgate.notify``, kind ``nightly``): the log, the file and the webhook if configured."""
    from tollgate import notify as notifier

    notifier.notify("nightly", subject, lines, context=context)


def regression_check(model: str, version: str, evidence: dict[str, Any], *, alias: str,
                     tracking_uri: str | None = None) -> dict[str, Any]:
    """Failed gates (incl. the regression gate vs the champion) and nightly-over-nightly regressions."""
    alerts = [f"gate failed: {g}" for g in evidence.get("failed_gates", [])]
    if not evidence:
        alerts.append("no evidence recorded: the evaluation did not finish")
    current = _suite_metrics(model, version, None, tracking_uri) if evidence.get("run_id") else {}
    previous = _suite_metrics(model, version, evidence.get("run_id"), tracking_uri)
    # `current` is the newest run of each suite: the one this DAG run just logged.
    alerts += compare_nightlies(previous, current) if previous else []
    if alerts:
        notify(f"Tollgate nightly: {model}:{version} ({alias})", alerts,
               context={"model": model, "version": version, "alias": alias, "run_url": evidence.get("run_url")})
    return {"alerts": alerts, "compared_with_previous": bool(previous)}
