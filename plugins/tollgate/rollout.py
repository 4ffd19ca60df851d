"""The progressive canary, full rollout, rollback and the order of environments, for the DAGs.

After the approval, ``model_promotion`` deploys the candidate into the canary slot
(``tollgate.deploy``), then one :class:`CanaryStepOperator` per weight of the policy
(``thresholds/canary-policy.yaml``): set the weight, then defer (Airflow's triggerer waits,
no worker slot is held) and analyse every ``analysis.interval_s`` over Prometheus
(``evals.canary.analysis``) until the step is held long enough (next step), or the policy
says abort (the weight goes to 0 at once and the task fails naming the check and its
numbers). :func:`abort_canary` then removes the slot and writes the audit record; the alias
never moves. At 100 % :func:`full_rollout` makes the candidate stable, the alias moves
(``tollgate.promotion.promote``) and :class:`RetireOperator` removes the old stable after
``old_stable_warm_s`` (deferred as well).

:func:`rollback` (the ``model_rollback`` DAG and ``./tollgate rollback``) aborts a running
canary first, puts the previous champion back into the stable slot and the alias back.
:func:`check_environment_order` refuses production for a version that did not pass staging.
Every abort, rollback and promotion notifies (``tollgate.notify``).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from tollgate import constants as c
from tollgate.exceptions import TollgateError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from evals.canary import analysis as an
    from evals.canary.policy import CanaryRolloutPolicy
    from tollgate.deploy import Deployment

# DAG files import this module while they are parsed: the canary analysis (evals.canary.analysis,
# evals.canary.stats), the deploy backends and the policy parser are imported where they are used.

log = logging.getLogger("tollgate.rollout")

ABORT_KEY = "canary_abort"  # XCom of a step that aborted: reason, failed checks, numbers
STATE_KEY = "canary_step_state"  # XCom of a step between its analyses


class CanaryAborted(TollgateError):
    """The canary failed its analysis: weight 0, the run fails with the reason."""


# -- the policy ---------------------------------------------------------------------------------


def policy_path() -> Path:
    """TOLLGATE_CANARY_POLICY, else ``$TOLLGATE_THRESHOLDS/canary-policy.yaml``; a thresholds folder
    without one (a test's own gate folder) gets the production policy, the strict side."""
    from tollgate import settings

    s = settings.current()
    p = Path(s.canary_policy)
    p = p if p.is_absolute() else c.REPO_ROOT / p
    if not s.canary_policy_file and not p.is_file():
        log.info("no %s: the canary runs the production policy thresholds/canary-policy.yaml", p)
        return c.REPO_ROOT / "thresholds" / "canary-policy.yaml"
    return p


def load_rollout_policy(traffic_s: float | None = None) -> CanaryRolloutPolicy:
    """The configured policy; ``traffic_s`` (the ``traffic`` Param) replaces every step's hold."""
    from evals.canary.policy import load_policy

    return load_policy(policy_path()).with_hold(traffic_s)


def describe_policy(traffic_s: float | None = None) -> str:
    """Markdown for the approval page: which canary policy runs after an approval."""
    policy = load_rollout_policy(traffic_s)
    return policy.describe() + f"\n- deploy target: `{_target()}`\n"


def _target() -> str:
    from tollgate import settings

    return settings.current().deploy_target


def traffic_seconds(raw: Any) -> float | None:
    """The ``traffic`` Param: seconds each step waits (None or 0: the policy's holds)."""
    if raw in (None, "", 0):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise TollgateError(f"param traffic {raw!r} must be seconds per canary step") from None
    if not (math.isfinite(value) and value > 0):
        raise TollgateError(f"param traffic {raw!r} must be > 0 seconds")
    return value


# -- adapters the tests replace -------------------------------------------------------------------


def deployment_for(model: str) -> Deployment:
    from tollgate import deploy

    return deploy.for_model(model)


def query_for() -> an.QueryFn:
    from evals.canary import analysis as an

    return an.prometheus_query(None)  # evals.promql.default_url(): TOLLGATE_PROMETHEUS_URL or the embedded one


def scores_for(policy: CanaryRolloutPolicy, model: str) -> an.ScoresFn | None:
    """Per-request feedback scores from the request log when the policy says so (else the histogram)."""
    if policy.checks.quality.source != "requestlog":
        return None
    from tollgate import settings

    source = settings.current().request_log_source(model)

    def scores(arm: str, window_s: float) -> list[float]:
        from evals import requestlog

        end = time.time()
        table = requestlog.read_window(source, end - window_s, end, kind="feedback", model=model)
        return [float(r["feedback_score"]) for r in requestlog.rows(table)
                if r.get("arm") == arm and r.get("feedback_score") is not None]

    return scores


# -- the canary step ------------------------------------------------------------------------------


class CanaryStepOperator(BaseOperator):
    """Set one canary weight, then analyse it every interval without holding a worker slot."""

    template_fields: Sequence[str] = ("model_name", "model_version", "traffic")
    ui_color = "#e8f4ea"

    def __init__(self, *, model_name: str, model_version: str, weight: int, traffic: Any = None,
                 namespace: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name, self.model_version, self.weight = model_name, model_version, weight
        self.traffic, self.namespace = traffic, namespace

    def _policy(self) -> CanaryRolloutPolicy:
        return load_rollout_policy(traffic_seconds(self.traffic))

    def _hold(self, policy: CanaryRolloutPolicy) -> float:
        return next(s.hold_s for s in policy.steps if s.weight == self.weight)

    def execute(self, context: Context) -> Any:
        from evals.canary import analysis as an

        policy = self._policy()
        self._ti = context["ti"]
        deployment_for(self.model_name).set_weight(self.weight)
        self.log.info("canary %s:%s at %d %% of requests; holding %.0f s, analysing every %.0f s (watch: the "
                      "gateway's X-Tollgate-Arm header, Prometheus llm_requests_total{arm=\"canary\"})",
                      self.model_name, self.model_version, self.weight, self._hold(policy),
                      policy.analysis.interval_s)
        self._wait(policy, an.StepState(weight=self.weight, started=time.time()))

    def _wait(self, policy: CanaryRolloutPolicy, state: an.StepState) -> None:
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=policy.analysis.interval_s)
        kept = {k: v for k, v in asdict(state).items() if k != "last"}  # the numbers are in the log and XCom
        # Also in XCom: dag.test() resumes a deferred task with the trigger's event alone (no kwargs).
        self._ti.xcom_push(key=STATE_KEY, value=kept)
        self.defer(trigger=DateTimeTrigger(moment=moment), method_name="analyse", kwargs={"state": kept})

    def analyse(self, context: Context, event: Any = None, state: dict[str, Any] | None = None) -> dict[str, Any]:
        from evals.canary import analysis as an

        policy = self._policy()
        self._ti = context["ti"]
        state = state or self._ti.xcom_pull(task_ids=self.task_id, key=STATE_KEY,
                                            map_indexes=getattr(self._ti, "map_index", -1))
        if not state:
            raise TollgateError(f"{self.task_id}: resumed without its step state; the step starts again")
        st = an.StepState(**state)
        now = time.time()
        result = an.analyse(policy, query_for(), model=self.model_name, weight=self.weight,
                            window_s=an.window_for(policy, st, now), namespace=self.namespace,
                            scores=scores_for(policy, self.model_name))
        action = an.next_action(policy, st, result, now, hold_s=self._hold(policy))
        self.log.info("analysis %d at %d %%: %s; %s", action.state.analyses, self.weight, result.phase.value,
                      "; ".join(f"{x.name}={x.canary if x.canary is not None else 'absent'} ({x.status})"
                                for x in result.checks) or "; ".join(result.reasons))
        if action.kind == "abort":
            deployment_for(self.model_name).set_weight(0)  # at once; the abort task removes the slot
            record = {"weight": self.weight, "reason": action.reason, "analyses": action.state.analyses,
                      "failed_checks": [asdict(x) for x in result.failed_checks] or
                      [{"name": "inconclusive", "reason": r} for r in result.reasons],
                      "requests": result.requests, "elapsed_s": round(now - st.started, 1)}
            context["ti"].xcom_push(key=ABORT_KEY, value=_json_safe(record))
            raise CanaryAborted(f"canary aborted at {self.weight} %: {action.reason}")
        if action.kind == "wait":
            self._wait(policy, action.state)  # raises TaskDeferred
            raise AssertionError("defer() returned")  # pragma: no cover
        self.log.info("step %d %% passed after %d analyses: %s", self.weight, action.state.analyses, action.reason)
        return _json_safe({"weight": self.weight, "analyses": action.state.analyses, "reason": action.reason,
                           "elapsed_s": round(now - st.started, 1), "result": result.to_dict()})


class RetireOperator(BaseOperator):
    """After a full rollout: keep the old stable warm ``old_stable_warm_s`` (deferred), then remove it."""

    template_fields: Sequence[str] = ("model_name", "old_version")

    def __init__(self, *, model_name: str, old_version: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name, self.old_version = model_name, old_version

    def execute(self, context: Context) -> None:
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        warm = load_rollout_policy().old_stable_warm_s
        self.log.info("old stable %s:%s stays warm %.0f s for a fast rollback", self.model_name, self.old_version,
                      warm)
        self.defer(trigger=DateTimeTrigger(moment=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=warm)),
                   method_name="retire")

    def retire(self, context: Context, event: Any = None) -> dict[str, Any]:
        from tollgate.deploy import PREVIOUS

        dep = deployment_for(self.model_name)
        st = dep.state()
        if st.previous is None or st.previous.version != self.old_version:
            self.log.info("previous slot no longer holds %s (a rollback used it?): nothing to retire", self.old_version)
            return {"retired": None}
        dep.remove(PREVIOUS)
        self.log.info("retired %s:%s", self.model_name, self.old_version)
        return {"retired": self.old_version}


def _json_safe(obj: Any) -> Any:
    """NaN/inf become None: XCom is JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


# -- the tasks around the steps ------------------------------------------------------------------


def deploy_candidate(request: dict[str, Any]) -> dict[str, Any]:
    """The champion serving in stable (deployed if it is not), the candidate in the canary slot at 0 %."""
    from tollgate.deploy import CANARY, STABLE

    model, version, champion = request["model_name"], request["model_version"], request["champion_version"]
    dep = deployment_for(model)
    st = dep.state()
    if st.canary is not None:
        raise TollgateError(f"{model}: a canary ({st.canary.version}) is already deployed; abort or finish it first")
    if champion and (st.stable is None or st.stable.version != str(champion)):
        log.warning("%s: stable serves %s, the champion is %s: deploying the champion into stable", model,
                    st.stable.version if st.stable else "nothing", champion)
        dep.deploy(STABLE, str(champion))
    slot = dep.deploy(CANARY, version)
    return {"canary": asdict(slot), "state": dep.state().to_dict(), "deployed_at": time.time()}


def final_analysis(model: str, deployed_at: float, *, namespace: str | None = None) -> dict[str, Any]:
    """Both arms over the canary's whole life (deploy to now): the numbers the verdict file carries."""
    from evals.canary import analysis as an

    policy = load_rollout_policy()
    window = max(policy.analysis.interval_s, time.time() - deployed_at)
    result = an.analyse(policy, query_for(), model=model, weight=50, window_s=window, namespace=namespace,
                        scores=scores_for(policy, model))
    return dict(_json_safe(result.to_dict()))


def write_verdict(results_dir: str, model: str, version: str, steps: list[dict[str, Any] | None],
                  final: dict[str, Any] | None = None) -> str:
    """The canary verdict file (``RunFolder.canary``), judged by evals.gate_check with the canary gate file.

    Its metrics (the names of thresholds/canary.yaml) are ``final``: both arms over the whole
    canary, from the deploy to the end of the last step, so the sample counts are the
    canary's, not one analysis window's. Without it, the last analysis that compared both
    arms (the step before 100 %, where stable still served).
    """
    from evals.contract import RunFolder
    from evals.results import build_meta, utc_now, write_results
    from tollgate import resultstore

    compared = [s for s in steps if s and s.get("weight", 100) < 100] or [s for s in steps if s]
    if not compared:
        raise TollgateError("no canary step finished: no verdict")
    last = {"result": final} if final else compared[-1]
    metrics = {k: (math.nan if v is None else v) for k, v in (last["result"].get("metrics") or {}).items()}
    policy = load_rollout_policy()
    with resultstore.synced(results_dir, push=True) as folder:
        path = Path(RunFolder(str(folder)).canary)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_results(path, metrics=metrics, meta=build_meta(
            model=model, version=version, suite="canary", started=utc_now(), policy=str(policy.path),
            policy_sha256=policy.sha256, weights=[s["weight"] for s in steps if s],
            analyses=sum(s["analyses"] for s in steps if s)),
            verdict={"phase": last["result"]["phase"], "reasons": last["result"]["reasons"],
                     "steps": [{k: s[k] for k in ("weight", "analyses", "elapsed_s", "reason")} for s in steps if s]})
    return str(path)


def abort_canary(request: dict[str, Any], abort: dict[str, Any] | None, *, dag_id: str, dag_run_id: str) -> dict:
    """Weight 0 (again), the candidate slot removed, an audit record with the failing check; the alias stays."""
    from tollgate import notify
    from tollgate.deploy import CANARY
    from tollgate.mlflow import registry

    model, version = request["model_name"], request["model_version"]
    dep = deployment_for(model)
    dep.remove(CANARY)
    abort = abort or {"reason": "a canary task failed before its analysis decided", "failed_checks": []}
    checks = "; ".join(f"{x.get('name')}: {x.get('reason')}" for x in abort.get("failed_checks", []))
    why = f"canary aborted at {abort.get('weight', '?')} %: {abort['reason']}" + (f" [{checks}]" if checks else "")
    rec = registry.record_decision(model, request["alias"], version, decision="canary_aborted", actor="canary",
                                   reason=why, dag_id=dag_id, dag_run_id=dag_run_id)
    notify.notify("canary_aborted", f"Tollgate: canary of {model}:{version} aborted", [why],
                  context={"model": model, "version": version, "dag_run_id": dag_run_id, **abort})
    return {"why": why, "record": rec.record_id, "state": dep.state().to_dict()}


def full_rollout(request: dict[str, Any]) -> dict[str, Any]:
    """100 % held: the candidate becomes stable, the old stable goes warm into ``previous``."""
    dep = deployment_for(request["model_name"])
    st = dep.promote_canary()
    return {"stable": st.stable.version if st.stable else None,
            "previous": st.previous.version if st.previous else None}


# -- the order of environments --------------------------------------------------------------------


def staging_record(model: str, version: str, max_age_h: float, *, now: dt.datetime | None = None) -> Any | None:
    """The newest applied move of alias ``staging`` onto exactly ``version`` within ``max_age_h`` hours."""
    from tollgate.mlflow import registry

    now = now or dt.datetime.now(dt.UTC)
    for rec in reversed(registry.alias_history(model, "staging")):
        if rec.to_version != str(version) or not rec.applied or rec.action not in ("move", "rollback"):
            continue
        when = dt.datetime.fromisoformat(rec.recorded_utc.replace("Z", "+00:00"))
        return rec if now - when <= dt.timedelta(hours=max_age_h) else None
    return None


def check_environment_order(request: dict[str, Any], *, override: bool, override_reason: str, actor: str,
                            dag_id: str, dag_run_id: str) -> dict[str, Any]:
    """Production only for a version that passed staging recently, or with an explicit audited override."""
    from tollgate import settings
    from tollgate.mlflow import registry

    if request["target_env"] != "production":
        return {"required": False}
    model, version = request["model_name"], request["model_version"]
    max_age = settings.current().staging_max_age_hours
    rec = staging_record(model, version, max_age)
    if rec is not None:
        return {"required": True, "staging_record": rec.record_id, "staged_utc": rec.recorded_utc}
    if override:
        if not (override_reason or "").strip():
            raise TollgateError("param override_staging needs override_reason: why production skips staging")
        audit = registry.record_decision(model, request["alias"], version, decision="staging_override", actor=actor,
                                         reason=f"production without staging: {override_reason}", dag_id=dag_id,
                                         dag_run_id=dag_run_id)
        return {"required": True, "override": audit.record_id}
    why = (f"{model}:{version} has no audited move to alias staging within {max_age:g} h: promote it to staging "
           "first (or set override_staging with a reason)")
    registry.record_decision(model, request["alias"], version, decision="refused_no_staging", actor=actor,
                             reason=why, dag_id=dag_id, dag_run_id=dag_run_id)
    raise TollgateError(f"production refused: {why}")


# -- rollback -------------------------------------------------------------------------------------


def rollback(model: str, *, to_version: str | None, actor: str, reason: str, dag_id: str | None = None,
             dag_run_id: str | None = None) -> dict[str, Any]:
    """Abort a running canary, put the previous champion (or ``to_version``) back into stable, move the alias back.

    Without ``to_version`` the target is the champion before the last audited move of
    ``champion`` (``tollgate.mlflow.registry.rollback_alias``).
    """
    from tollgate import notify
    from tollgate.deploy import CANARY
    from tollgate.mlflow import audit, registry

    if not (actor or "").strip() or not (reason or "").strip():
        raise TollgateError("a rollback needs who (actor) and why (reason)")
    dep = deployment_for(model)
    st = dep.state()
    aborted = None
    if st.canary is not None:
        aborted = st.canary.version
        dep.remove(CANARY)
        log.warning("%s: canary %s aborted by the rollback", model, aborted)
    current = registry.get_alias(model, registry.CHAMPION)
    if to_version is None:
        last = audit.previous_target(registry.alias_history(model, registry.CHAMPION), registry.CHAMPION, current)
        if last is None or last.from_version is None:
            raise TollgateError(f"{model}: no audited previous champion to roll back to (use --to VERSION)")
        target = last.from_version
    else:
        target = str(to_version)
    if target == current and st.stable is not None and st.stable.version == target:
        raise TollgateError(f"{model}: {target} is already the champion and serving; nothing to roll back")
    dep.restore(target)
    why = f"rollback by {actor}: {reason}" + (f" (canary {aborted} aborted)" if aborted else "")
    if to_version is None:
        move = registry.rollback_alias(model, registry.CHAMPION, actor=actor, reason=why, dag_id=dag_id,
                                       dag_run_id=dag_run_id)
    else:
        move = registry.move_alias(model, registry.CHAMPION, target, actor=actor, reason=why, dag_id=dag_id,
                                   dag_run_id=dag_run_id)
    notify.notify("rolled_back", f"Tollgate: {model} rolled back to {target}", [why],
                  context={"model": model, "from": current, "to": target, "actor": actor})
    return {"model": model, "from": current, "to": target, "changed": move.changed, "aborted_canary": aborted,
            "serving": dep.state().to_dict()}


# -- the tasks, built once for every DAG that canaries --------------------------------------------


def build_progressive_canary(*, model: str, version: str, results_dir: str, traffic: str,
                             request_task_id: str = "validate_request", dag_id: str = "model_promotion",
                             gate_file: str | None = None, namespace: str | None = None) -> dict[str, Any]:
    """Create the canary's tasks in the current DAG; return them by role.

    deploy_candidate -> canary_<w> (one deferrable step per policy weight) -> canary_verdict
    -> gate_canary (evals.gate_check on the verdict file) -> full_rollout; abort_canary runs
    when a step or the gate failed (ONE_FAILED) and fails the run with the reason; retire_previous
    waits the warm time after the full rollout (deferred) and removes the old stable.
    """
    from airflow.sdk import task
    from airflow.task.trigger_rule import TriggerRule

    from evals.contract import RunFolder
    from tollgate import settings
    from tollgate.operators.base import execution_mode
    from tollgate.operators.factory import pod_task
    from tollgate.podspec import ModelVolume, PodStep, Resources, ResultsLocation

    policy = load_rollout_policy()  # the weights are fixed at parse time; holds and bounds at run time
    reads = ModelVolume.for_reading() if execution_mode() is c.ExecutionMode.LOCAL else None

    @task(task_id="deploy_candidate")
    def deploy(ti: Any = None) -> dict[str, Any]:
        return deploy_candidate(ti.xcom_pull(task_ids=request_task_id))

    steps = [CanaryStepOperator(task_id=f"canary_{s.weight}", model_name=model, model_version=version,
                                weight=s.weight, traffic=traffic, namespace=namespace) for s in policy.steps]

    @task(task_id="canary_verdict")
    def verdict(ti: Any = None) -> str:
        r = ti.xcom_pull(task_ids=request_task_id)
        results = [ti.xcom_pull(task_ids=s.task_id) for s in steps]
        deployed = ti.xcom_pull(task_ids="deploy_candidate") or {}
        final = final_analysis(r["model_name"], float(deployed["deployed_at"]), namespace=namespace) \
            if deployed.get("deployed_at") else None
        return write_verdict(_rendered_folder(ti, results_dir), r["model_name"], r["model_version"], results, final)

    in_pod = RunFolder(f"{c.RESULTS_MOUNT_PATH}/{results_dir}")
    gate = pod_task(PodStep(
        name="gate-canary", command=("python", "-m", "evals.gate_check"),
        args=("--results", in_pod.canary, "--threshold-file", gate_file or settings.current().canary_thresholds,
              "--output", in_pod.canary.replace(".json", ".verdict.json")),
        resources=Resources(cpu="500m", memory="512Mi"), handoff=results_dir, volume=reads,
        results=ResultsLocation.on_volume(RunFolder(results_dir).canary.replace(".json", ".verdict.json")),
    ), task_id="gate_canary")

    @task(task_id="full_rollout")
    def rollout(ti: Any = None) -> dict[str, Any]:
        return full_rollout(ti.xcom_pull(task_ids=request_task_id))

    @task(task_id="abort_canary", trigger_rule=TriggerRule.ONE_FAILED)
    def abort(ti: Any = None, run_id: str | None = None) -> None:
        r = ti.xcom_pull(task_ids=request_task_id)
        info = next((x for x in (ti.xcom_pull(task_ids=s.task_id, key=ABORT_KEY) for s in steps) if x), None)
        if info is None:
            info = {"reason": "the canary verdict did not pass its gates (evals.gate_check, "
                              f"{gate_file or settings.current().canary_thresholds})", "failed_checks": []}
        out = abort_canary(r, info, dag_id=dag_id, dag_run_id=run_id or "")
        ti.xcom_push(key=ABORT_KEY, value=out)
        raise CanaryAborted(out["why"])

    retire = RetireOperator(task_id="retire_previous", model_name=model,
                            old_version="{{ ti.xcom_pull(task_ids='full_rollout')['previous'] }}")

    d, v, r = deploy(), verdict(), rollout()
    chain_ = [d, *steps, v, gate, r]
    for a, b in zip(chain_, chain_[1:], strict=False):
        a >> b
    a_task = abort()
    [d, *steps, v, gate] >> a_task
    r >> retire
    return {"deploy": d, "steps": steps, "verdict": v, "gate": gate, "rollout": r, "abort": a_task,
            "retire": retire}


def _rendered_folder(ti: Any, results_dir: str) -> str:
    """The run folder, rendered (``results_dir`` is a template of the DAG's macros)."""
    if "{{" not in results_dir:
        return results_dir
    from tollgate.promotion import run_folder

    r = ti.xcom_pull(task_ids="validate_request") or {}
    return run_folder(ti.dag_id, ti.run_id, r.get("model_name", ""), r.get("model_version", ""))
