"""The decisions and records of ``model_promotion`` and ``nightly_eval``, as plain functions.

DAG files wire these into tasks (``tollgate.tasks`` holds the tasks both DAGs share);
tests call them directly. Heavy imports (mlflow) happen inside ``tollgate.mlflow.tracking``
/ ``tollgate.mlflow.registry`` calls, never at import. File names inside a run folder are
``evals.contract.RunFolder``'s.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from evals.contract import SUITES, InvalidModelRef, RunFolder, validate_model_ref
from tollgate import constants as c
from tollgate.exceptions import GateFailed, TollgateError

log = logging.getLogger("tollgate.promotion")

TARGET_ALIAS = {"staging": "staging", "production": "champion"}


def local_results_dir(results_dir: str) -> Path:
    """The local folder behind ``/results/<results_dir>`` (the model claim's results/ folder)."""
    from tollgate import settings

    root = settings.evals_settings().home / c.LOCAL_VOLUMES_DIR / c.MODEL_PVC / c.RESULTS_SUBPATH
    path = (root / results_dir).resolve()
    if root.resolve() not in path.parents and path != root.resolve():
        raise TollgateError(f"results folder {results_dir!r} escapes the results volume")
    return path


def run_folder(dag_id: str, run_id: str, model: str, version: str) -> str:
    """A filesystem-safe folder name for one DAG run's files about one version."""
    safe_run = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)
    return f"{dag_id}/{safe_run}/{model}-{version}"


def validate_request(model_name: str, model_version: str, target_env: str) -> dict[str, Any]:
    """Check the Params against the registry; say what the promotion would move."""
    from tollgate.mlflow import registry

    try:
        validate_model_ref(model_name or "", str(model_version or ""))
    except InvalidModelRef as exc:
        raise TollgateError(f"params model_name/model_version: {exc}") from None
    if target_env not in TARGET_ALIAS:
        raise TollgateError(f"param target_env {target_env!r} must be one of {sorted(TARGET_ALIAS)}")
    if not registry.model_version_exists(model_name, str(model_version)):
        raise TollgateError(f"param model_version: {model_name} version {model_version} is not in the registry")
    cfg = registry.serving_config(model_name, str(model_version))
    aliases = registry.get_aliases(model_name)
    alias = TARGET_ALIAS[target_env]
    champion = aliases.get(registry.CHAMPION)
    champion_cfg = registry.serving_config(model_name, champion) if champion else None
    return {
        "model_name": model_name,
        "model_version": str(model_version),
        "target_env": target_env,
        "alias": alias,
        "source": cfg.source,
        "champion_version": champion,
        "champion_source": champion_cfg.source if champion_cfg else None,
        "candidate_config": cfg.to_dict(),
        "champion_config": champion_cfg.to_dict() if champion_cfg else None,
        "current_target": aliases.get(alias),
        "already_promoted": aliases.get(alias) == str(model_version),
    }


def materialize_prompts(model: str, version: str, results_dir: str) -> str:
    """Write the version's registered prompt set to the run folder (``RunFolder.prompts``).

    A version is weights plus prompt plus parameters; evaluating it with any other prompt
    would judge something that is not going to serve. A version registered without a
    prompt is evaluated with the repository's default prompt set (and the log says so).
    """
    from evals import settings as evals_settings
    from tollgate.mlflow import registry

    cfg = registry.serving_config(model, version)
    target = Path(RunFolder(str(local_results_dir(results_dir))).prompts)
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(cfg.template, str) and cfg.template.strip():
        target.write_text(cfg.template)
        log.info("prompt set of %s:%s: %s", model, version, cfg.prompt.uri if cfg.prompt else "inline")
    else:
        default = evals_settings.REPO_ROOT / "evals" / "prompts" / "quality.yaml"
        target.write_text(default.read_text())
        log.warning("%s:%s has no registered prompt; evaluating with the default prompt set", model, version)
    return str(target)


def fetch_baseline(model: str, champion_version: str | None, results_dir: str,
                   subject_version: str | None = None) -> dict[str, str]:
    """Write the champion's last results per suite to the run folder (``RunFolder.baseline``).

    Without a champion (or without its results) an empty-metrics file is written: the
    regression gate then fails closed, as it must, and says the metric is missing. The
    one exception is the champion's own evaluation (``subject_version`` is the champion)
    with no earlier results: its comparison gates record "baseline established" (the
    file says ``establishes_baseline``), since a first nightly has nothing to regress from.

    The champion's recorded quality answers are reused for the paired comparison only if
    they were produced with the champion's current prompt set (its sha256): otherwise the
    file says ``pairing_stale`` and the paired gates fail closed naming it.
    """
    from tollgate.mlflow import registry

    folder = RunFolder(str(local_results_dir(results_dir)))
    found: dict[str, str] = {}
    own = subject_version is not None and champion_version is not None and str(subject_version) == str(champion_version)
    for suite in SUITES:
        data = registry.champion_results(model, suite) if champion_version else None
        if data is None:
            note = f"no champion results for {suite}; regression gates fail closed"
            if own:
                note = f"the champion's first evaluation of {suite}: this run establishes the baseline"
            data = {"metrics": {}, "meta": {"note": note, "establishes_baseline": own}}
            found[suite] = "established" if own else "none"
        else:
            found[suite] = str((data.get("meta") or {}).get("version", champion_version))
            if suite == "quality" and champion_version:
                stale = _stale_answers(model, str(champion_version), data)
                if stale:
                    data.setdefault("meta", {})["pairing_stale"] = stale
        target = Path(folder.baseline(suite))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2))
    log.info("baselines for %s: %s", model, found)
    return found


def _stale_answers(model: str, champion_version: str, data: dict[str, Any]) -> str | None:
    """Why the champion's recorded answers are not what it answers today (its prompt changed), or None."""
    import hashlib

    from tollgate.mlflow import registry

    recorded = ((data.get("meta") or {}).get("prompts") or {}).get("sha256")
    cfg = registry.serving_config(model, champion_version)
    if not recorded or not isinstance(cfg.template, str) or not cfg.template.strip():
        return None  # registered without a prompt: evaluated with the default set, nothing to compare
    current = hashlib.sha256(cfg.template.encode()).hexdigest()
    if current != recorded:
        return (f"the champion's prompt set changed since its answers were recorded (sha256 {recorded[:12]} -> "
                f"{current[:12]}); re-evaluate the champion")
    return None


def record_evidence(model: str, version: str, *, dag_id: str, dag_run_id: str, results_dir: str,
                    title: str) -> dict[str, Any]:
    """Log every suite's results, verdict, report and plots to MLflow; return the approval report.

    Runs whatever happened upstream: a suite whose results or verdict file is missing
    counts as a failed gate ("could not decide"), never as a pass. The report shows both
    verdicts (the deciding profile and production's thresholds on the same evidence), each
    gate's n, value, interval, bound, method and paired delta vs the champion, the judge,
    the canary policy that runs after approval, the MLflow runs and the plots.
    """
    from tollgate.mlflow import tracking

    folder = local_results_dir(results_dir)
    run = RunFolder(str(folder))
    parent = tracking.start_dag_run(model, version, dag_id=dag_id, dag_run_id=dag_run_id)
    verdicts = {suite: json.loads(Path(run.verdict(suite)).read_text()) for suite in SUITES
                if Path(run.results(suite)).is_file() and Path(run.verdict(suite)).is_file()}
    plots = render_plots(folder, run, verdicts, (f"{model}:{version}", "champion"))
    failed: list[str] = []
    sections: list[str] = []
    suite_runs: dict[str, str] = {}
    for suite in SUITES:
        results, verdict, report = Path(run.results(suite)), Path(run.verdict(suite)), Path(run.report(suite))
        if suite not in verdicts:
            failed.append(f"{suite}: no {'results' if not results.is_file() else 'verdict'} (evaluation did not finish)")
            sections.append(f"### {suite}: NO EVIDENCE\n\nThe {suite} evaluation did not produce a judged result.\n")
            continue
        suite_runs[suite] = tracking.log_suite_run(parent, suite, results=results, verdict=verdict,
                                                   report=report if report.is_file() else None,
                                                   plots=plots.get(suite, []))
        data = verdicts[suite]
        failed += [f"{suite}/{name}" for name in data.get("failed_gates", [])]
        if not data.get("passed"):
            failed += [] if data.get("failed_gates") else [f"{suite}: verdict not passed"]
        sections.append((report.read_text() if report.is_file() else f"### {suite}: see MLflow\n")
                        + f"\n[MLflow run of the {suite} suite]({tracking.run_url(suite_runs[suite])})\n")
    url = tracking.run_url(parent)
    tracking.finish_dag_run(parent, passed=not failed, summary={"failed_gates": failed, "suite_runs": suite_runs})
    body = "\n".join([f"## {title}", "", f"Evidence: [MLflow run]({url})", "",
                      *evidence_summary(verdicts), "", *sections, *plot_section(plots, suite_runs)])
    if failed:
        body += "\n**Failed or undecided:** " + ", ".join(failed) + "\n"
    return {"run_id": parent, "run_url": url, "report": body, "failed_gates": failed, "suite_runs": suite_runs}


def _verdict_cell(data: dict[str, Any] | None) -> str:
    if not data:
        return "—"
    if data.get("passed"):
        return "PASSED"
    return f"FAILED ({len(data.get('failed_gates') or [])} of {len(data.get('gates') or [])} gates)"


def evidence_summary(verdicts: dict[str, dict[str, Any]]) -> list[str]:
    """Both verdicts side by side, the judge, and the canary that runs after an approval."""
    profile = next((v.get("profile") for v in verdicts.values() if v.get("profile")), "deciding")
    lines = ["### Verdicts", "", f"| Suite | {profile} profile (deciding) | production thresholds (same evidence) |",
             "|---|---|---|"]
    for suite in SUITES:
        data = verdicts.get(suite)
        prod = (data or {}).get("production") or (data if data and _is_production(data) else None)
        lines.append(f"| {suite} | {_verdict_cell(data)} | {_verdict_cell(prod)} |")
    judge = (verdicts.get("quality") or {}).get("judge") or "not judged: no quality verdict"
    lines += ["", f"**Judge:** {judge}", "", f"**Canary after approval:** {canary_policy_line()}"]
    return lines


def _is_production(verdict: dict[str, Any]) -> bool:
    """A verdict judged with the repository's production threshold folder itself."""
    from evals import settings as evals_settings

    path = verdict.get("thresholds_file")
    return bool(path) and _repo_path(str(path)).resolve().parent == (evals_settings.REPO_ROOT / "thresholds").resolve()


def canary_policy_line() -> str:
    """The canary policy file that model_promotion runs after an approval (name, steps), or its gates."""
    import yaml

    from tollgate import settings

    env = settings.current()
    path = getattr(env, "canary_policy", None)
    resolved = _repo_path(path) if path else None
    if resolved is not None and resolved.is_file():
        try:
            doc = yaml.safe_load(resolved.read_text()) or {}
        except yaml.YAMLError:
            doc = {}
        steps = " -> ".join(f"{s.get('weight')} %" + (f" for {s['hold_s']:g} s" if s.get("hold_s") else "")
                            for s in doc.get("steps") or [] if isinstance(s, dict))
        name = doc.get("description") or resolved.name
        return f"`{path}`: {name}" + (f" (steps {steps})" if steps else "")
    return f"gates `{env.canary_thresholds}` (no canary policy file at `{path}`)" if path else \
        f"gates `{env.canary_thresholds}`"


def _repo_path(path: str) -> Path:
    from evals import settings as evals_settings

    p = Path(path)
    return p if p.is_absolute() else evals_settings.REPO_ROOT / p


PLOT_FILES = {"latency": ("latency-cdf.png",), "quality": ("quality-per-category.png", "quality-paired-deltas.png")}


def render_plots(folder: Path, run: RunFolder, verdicts: dict[str, dict[str, Any]],
                 labels: tuple[str, str]) -> dict[str, list[Path]]:
    """Draw the approval page's plots into the run folder; {suite: [png]} to log with that suite."""
    from evals import plots

    def load(path: str) -> dict[str, Any] | None:
        p = Path(path)
        try:
            return json.loads(p.read_text()) if p.is_file() else None
        except ValueError:
            return None

    out: dict[str, list[Path]] = {}
    drawn: list[tuple[str, Path | None]] = []
    latency = load(run.results("latency"))
    if latency is not None:
        drawn.append(("latency", plots.latency_cdf(latency, load(run.baseline("latency")), folder / "latency-cdf.png",
                                                   labels)))
    quality = load(run.results("quality"))
    if quality is not None:
        drawn.append(("quality", plots.per_category(quality, load(run.baseline("quality")),
                                                    folder / "quality-per-category.png", labels)))
    rows = [{**g, "suite": suite} for suite, v in verdicts.items() for g in v.get("gates") or []]
    drawn.append(("quality", plots.paired_deltas(rows, folder / "quality-paired-deltas.png")))
    for suite, path in drawn:
        if path is not None:
            out.setdefault(suite, []).append(path)
    return out


def plot_section(plots: dict[str, list[Path]], suite_runs: dict[str, str]) -> list[str]:
    """Markdown images served by MLflow (Airflow's page renders http(s) images, not data: URIs)."""
    from tollgate.mlflow import tracking

    lines = []
    for suite, paths in plots.items():
        if suite not in suite_runs:
            continue
        for p in paths:
            src = tracking.artifact_url(suite_runs[suite], f"{tracking.PLOTS_DIR}/{p.name}")
            lines.append(f"![{p.stem}]({src})")
    return ["### Plots", "", *lines, ""] if lines else []


def require_gates_passed(evidence: dict[str, Any] | None) -> None:
    if not evidence:
        raise GateFailed("no evidence was recorded; nothing moves")
    if evidence.get("failed_gates"):
        raise GateFailed("gate(s) failed, nothing moves, no approval asked: " + ", ".join(evidence["failed_gates"]))


def approval_outcome(approval: dict[str, Any] | None) -> tuple[str, str]:
    """(decision, who) from the ApprovalOperator's XCom: approved/rejected/timed_out/no_response."""
    if not approval:
        return "no_response", "nobody"
    chosen = (approval.get("chosen_options") or [None])[0]
    user = approval.get("responded_by_user")
    who = (user.get("name") or user.get("id")) if isinstance(user, dict) else (str(user) if user else "")
    if not who or chosen is None:
        return "timed_out", "nobody"
    return ("approved" if chosen == "Approve" else "rejected"), str(who)


_UNCHECKED = object()


def promote(model: str, version: str, alias: str, *, approver: str, evidence_run_id: str | None,
            canary: dict[str, Any] | None, dag_id: str, dag_run_id: str,
            expect_from: str | None | object = _UNCHECKED) -> dict[str, Any]:
    """Move the alias with its audit record (naming the DAG run); a version already there changes nothing.

    ``expect_from`` is the alias's target when the run validated its request
    (``validate_request``'s ``current_target``): if someone moved the alias since, this
    raises ``AliasConflict`` and moves nothing (the run records ``alias_conflict``).
    """
    from tollgate.mlflow import registry

    reason = f"approved by {approver} in model_promotion"
    if canary:
        reason += f"; canary {canary.get('decision', 'passed')}"
    if expect_from is _UNCHECKED:
        move = registry.move_alias(model, alias, version, actor=approver, reason=reason,
                                   evidence_run_id=evidence_run_id, dag_id=dag_id, dag_run_id=dag_run_id)
    else:
        move = registry.move_alias(model, alias, version, actor=approver, reason=reason,
                                   evidence_run_id=evidence_run_id, dag_id=dag_id, dag_run_id=dag_run_id,
                                   expect_from=expect_from)
    log.info("alias %s of %s: %s -> %s (changed=%s)", alias, model, move.from_version, version, move.changed)
    return {"alias": alias, "from": move.from_version, "to": version, "changed": move.changed}


def record_no_move(model: str, version: str, alias: str, *, decision: str, actor: str,
                   evidence_run_id: str | None, why: str, dag_id: str, dag_run_id: str) -> dict[str, Any]:
    """Audit a promotion that ended without a move (rejected, timed out, rolled back, gate failed)."""
    from tollgate.mlflow import registry

    rec = registry.record_decision(model, alias, version, decision=decision, actor=actor, reason=why,
                                   evidence_run_id=evidence_run_id, dag_id=dag_id, dag_run_id=dag_run_id)
    log.info("promotion of %s:%s to %s ended without a move: %s (%s, by %s)", model, version, alias, decision, why,
             actor)
    return {"decision": decision, "actor": actor, "why": why, "record": rec.record_id}

