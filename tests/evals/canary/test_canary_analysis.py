"""The progressive canary's analysis and step controller, against a fake Prometheus query function."""

from __future__ import annotations

import dataclasses
import http.server
import math
import threading
from pathlib import Path

import pytest

from evals.canary import analysis as an
from evals.canary.analysis import Phase, StepState, analyse, next_action, queries
from evals.canary.policy import load_policy, parse_policy
from evals.errors import BadInput

ROOT = Path(__file__).resolve().parents[3]
EMBEDDED = ROOT / "thresholds" / "embedded" / "canary-policy.yaml"


@pytest.fixture
def policy():
    return load_policy(EMBEDDED)


def arm_data(requests=100.0, errors=0.0, p95=1.0, ttft=0.2, guardrail=0.0, scores=(0.8,) * 20):
    return {"requests": requests, "errors": errors, "p95": p95, "ttft": ttft, "guardrail": guardrail,
            "scores": list(scores)}


def fake_prometheus(policy, arms: dict, *, window=30.0, namespace=None, absent=()):
    """A QueryFn answering exactly the analysis' PromQL for each arm (and failing on anything else)."""
    answers = {}
    for arm, d in arms.items():
        q = queries(policy, "m", arm, window, namespace)
        req = [] if "requests" in absent or d["requests"] is None else [({}, d["requests"])]
        answers[q["requests"]] = req
        answers[q["error_ratio"]] = [({}, d["errors"] / d["requests"])] if req else []
        answers[q["latency_p95_s"]] = [] if "latency" in absent else [({}, d["p95"])]
        answers[q["ttft_p95_s"]] = [({}, d["ttft"])]
        answers[q["guardrail_rate"]] = [({}, d["guardrail"] / d["requests"])] if req else []
        buckets, cum = [], 0
        for le in (0.25, 0.5, 0.75, 1.0):
            cum += sum(1 for s in d["scores"] if le - 0.25 < s <= le)
            buckets.append(({"le": str(le)}, float(cum)))
        buckets.append(({"le": "+Inf"}, float(cum)))
        answers[q["quality_buckets"]] = buckets
    asked = []

    def query(expr):
        asked.append(expr)
        if expr not in answers:
            raise AssertionError(f"unexpected PromQL: {expr}")
        return answers[expr]

    query.asked = asked
    query.answers = answers
    return query


def test_promql_selects_the_arm_model_and_namespace(policy):
    q = queries(policy, "smollm2-orders", "canary", 30, "ai-prod")
    sel = 'model="smollm2-orders",arm="canary",namespace="ai-prod"'
    answered = f"sum(increase(llm_requests_total{{{sel}}}[30s]))"
    fell_back = f"sum(increase(llm_fallback_total{{{sel}}}[30s]))"  # answered by stable, routed to the canary
    assert q["requests"] == f"(({answered} + ({fell_back} or vector(0))) or {fell_back})"
    assert q["error_ratio"] == f"(sum(increase(llm_errors_total{{{sel}}}[30s])) or vector(0)) / {q['requests']}"
    assert q["latency_p95_s"] == (f"histogram_quantile(0.95, sum by (le) "
                                  f"(rate(llm_request_duration_seconds_bucket{{{sel}}}[30s])))")
    assert "namespace" not in queries(policy, "m", "canary", 30)["requests"]
    with pytest.raises(ValueError):
        queries(policy, 'm"} or vector(1) #', "canary", 30)


def test_a_healthy_canary_is_successful(policy):
    q = fake_prometheus(policy, {"canary": arm_data(), "stable": arm_data()})
    r = analyse(policy, q, model="m", weight=25, window_s=30)
    assert r.phase is Phase.SUCCESSFUL, r.reasons
    assert {c.name: c.status for c in r.checks} == dict.fromkeys(
        ["error_ratio", "latency_p95_s", "ttft_p95_s", "guardrail_rate", "quality"], "pass")
    assert r.metrics["canary_error_rate"] == 0.0 and r.metrics["canary_min_arm_samples"] == 100


@pytest.mark.parametrize(("canary", "failing"), [
    (arm_data(errors=10), "error_ratio"),  # 10 % > 5 %
    (arm_data(p95=25.0), "latency_p95_s"),  # absolute bound
    (arm_data(p95=6.0), "latency_p95_s"),  # 6 x stable > 5 x
    (arm_data(ttft=1.2), "ttft_p95_s"),  # 6 x stable > 5 x
    (arm_data(guardrail=30), "guardrail_rate"),
    (arm_data(scores=[0.1] * 20), "quality"),
])
def test_each_broken_bound_fails_the_analysis_naming_the_check(policy, canary, failing):
    q = fake_prometheus(policy, {"canary": canary, "stable": arm_data()})
    r = analyse(policy, q, model="m", weight=25, window_s=30)
    assert r.phase is Phase.FAILED
    assert [c.name for c in r.failed_checks] == [failing]
    assert failing in r.reasons[0]


def test_relative_bound_catches_what_the_absolute_one_allows(policy):
    # 4 % errors is under the absolute 5 %, but stable fails 0 %: +4 points is under the 5-point delta...
    strict = dataclasses.replace(policy, checks=dataclasses.replace(
        policy.checks, error_ratio=an.Bound(0.05, 0.01)))
    q = fake_prometheus(strict, {"canary": arm_data(errors=4), "stable": arm_data()})
    r = analyse(strict, q, model="m", weight=25, window_s=30)
    assert r.phase is Phase.FAILED and "exceeds stable" in r.reasons[0]


def test_too_few_requests_is_inconclusive_even_when_a_bound_breaks(policy):
    # p95 latency over the bound on 2 requests: the third could change it.
    q = fake_prometheus(policy, {"canary": arm_data(requests=2, p95=25.0), "stable": arm_data()})
    r = analyse(policy, q, model="m", weight=5, window_s=30)
    assert r.phase is Phase.INCONCLUSIVE and "need 3" in r.reasons[0]


@pytest.mark.parametrize(("canary", "check"), [
    (arm_data(requests=1, errors=1), "error_ratio"),  # 1 error: >= 1/3 whatever the next 2 do (bound 0.05)
    (arm_data(requests=2, errors=1), "error_ratio"),
    (arm_data(requests=2, guardrail=1), "guardrail_rate"),  # >= 1/3 > 0.2
])
def test_errors_no_further_request_can_undo_fail_before_the_minimum_sample(policy, canary, check):
    q = fake_prometheus(policy, {"canary": canary, "stable": arm_data()})
    r = analyse(policy, q, model="m", weight=5, window_s=30)
    assert r.phase is Phase.FAILED, r.reasons
    assert r.reasons[0].startswith(check) and "decided before the minimum sample" in r.reasons[0]


def test_errors_more_requests_could_still_dilute_stay_inconclusive():
    # Production: at least 1000 requests, errors <= 2 %: 5 errors in 10 requests could still
    # end at 0.5 % of 1000, so nothing is concluded yet; 21 errors cannot.
    prod = load_policy(ROOT / "thresholds" / "canary-policy.yaml")
    q = fake_prometheus(prod, {"canary": arm_data(requests=10, errors=5), "stable": arm_data(requests=5000)})
    assert analyse(prod, q, model="m", weight=5, window_s=30).phase is Phase.INCONCLUSIVE
    q = fake_prometheus(prod, {"canary": arm_data(requests=30, errors=21), "stable": arm_data(requests=5000)})
    r = analyse(prod, q, model="m", weight=5, window_s=30)
    assert r.phase is Phase.FAILED and ">= 0.021 > 0.02" in r.reasons[0]


def test_absent_metric_or_unreachable_prometheus_is_never_successful(policy):
    q = fake_prometheus(policy, {"canary": arm_data(), "stable": arm_data()}, absent=("latency",))
    r = analyse(policy, q, model="m", weight=25, window_s=30)
    assert r.phase is Phase.INCONCLUSIVE and "metric absent" in r.reasons[0]
    q = fake_prometheus(policy, {"canary": arm_data(), "stable": arm_data()}, absent=("requests",))
    assert analyse(policy, q, model="m", weight=25, window_s=30).phase is Phase.INCONCLUSIVE

    def down(expr):
        raise an.QueryError("connection refused")

    r = analyse(policy, down, model="m", weight=25)
    assert r.phase is Phase.INCONCLUSIVE and "unreachable" in r.reasons[0]


def test_real_http_failure_is_a_query_error():
    class Fails(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(503)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fails)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(an.QueryError):
            an.prometheus_query(f"http://127.0.0.1:{srv.server_port}")("up")
    finally:
        srv.shutdown()


def test_at_full_weight_stable_comparisons_stop_when_stable_has_no_traffic(policy):
    q = fake_prometheus(policy, {"canary": arm_data(), "stable": arm_data(requests=None)})
    r = analyse(policy, q, model="m", weight=100, window_s=30)
    assert r.phase is Phase.SUCCESSFUL, r.reasons


def test_quality_uses_welch_and_cohens_d(policy):
    q = fake_prometheus(policy, {"canary": arm_data(scores=[0.55, 0.6] * 20), "stable": arm_data(
        scores=[0.9, 1.0] * 20)})
    r = analyse(policy, q, model="m", weight=50, window_s=30)
    assert r.phase is Phase.FAILED
    assert "Welch" in r.reasons[0] and r.metrics["canary_significant_quality_regression"] == 1.0
    assert r.metrics["quality_cohens_d"] < -0.5


def test_quality_can_come_from_the_request_log(policy):
    q = fake_prometheus(policy, {"canary": arm_data(scores=()), "stable": arm_data(scores=())})
    got = {"canary": [0.9] * 10, "stable": [0.9] * 10}
    r = analyse(policy, q, model="m", weight=50, window_s=30, scores=lambda arm, w: got[arm])
    assert r.phase is Phase.SUCCESSFUL and r.metrics["canary_scored"] == 10
    assert not any("quality" in e for e in q.asked)


def test_scores_from_buckets_places_counts_at_midpoints():
    result = [({"le": "0.5"}, 2.0), ({"le": "1.0"}, 5.0), ({"le": "+Inf"}, 5.0)]
    assert an.scores_from_buckets(result) == [0.25, 0.25, 0.75, 0.75, 0.75]


# -- the step controller -------------------------------------------------------------------


def result(phase, reason="x"):
    return an.AnalysisResult(phase, (), {}, 30.0, (reason,))


def test_controller_waits_for_the_hold_then_moves_on(policy):
    interval = policy.analysis.interval_s
    hold = 4 * interval
    s = StepState(weight=5, started=1000.0)
    now = 1000.0
    for _ in range(3):
        now += interval + 0.4
        s = next_action(policy, s, result(Phase.SUCCESSFUL), now=now, hold_s=hold).state
    act = next_action(policy, s, result(Phase.SUCCESSFUL), now=1000.0 + hold - 1, hold_s=hold)
    assert act.kind == "wait"  # four analyses, one second short of the hold
    act = next_action(policy, s, result(Phase.SUCCESSFUL), now=1000.0 + hold + 1.6, hold_s=hold)
    assert act.kind == "next" and act.state.analyses == 4


def test_a_slow_analysis_loop_holds_until_the_count_too(policy):
    # Two analyses 10 intervals apart cover the hold by the clock, not by the count: wait.
    interval = policy.analysis.interval_s
    s = StepState(weight=5, started=0.0)
    act = next_action(policy, s, result(Phase.SUCCESSFUL), now=5 * interval, hold_s=4 * interval)
    act = next_action(policy, act.state, result(Phase.SUCCESSFUL), now=10 * interval, hold_s=4 * interval)
    assert act.kind == "wait" and act.state.analyses == 2


def test_controller_aborts_after_max_failed_checks():
    pol = load_policy(ROOT / "thresholds" / "canary-policy.yaml")  # max_failed_checks: 2
    s = StepState(weight=25, started=0.0)
    act = next_action(pol, s, result(Phase.FAILED, "error_ratio 0.3 > 0.02"), now=60, hold_s=900)
    assert act.kind == "wait" and act.state.failed == 1
    act = next_action(pol, act.state, result(Phase.FAILED, "error_ratio 0.3 > 0.02"), now=120, hold_s=900)
    assert act.kind == "abort" and "2 failed analyses at 25 %" in act.reason and "error_ratio" in act.reason


def test_inconclusive_past_the_deadline_counts_as_failed(policy):
    s = StepState(weight=5, started=0.0)
    act = next_action(policy, s, result(Phase.INCONCLUSIVE, "metric absent"), now=5, hold_s=20)
    assert act.kind == "wait" and act.state.inconclusive_since == 5
    act = next_action(policy, act.state, result(Phase.INCONCLUSIVE, "metric absent"), now=30, hold_s=20)
    assert act.kind == "wait"  # hold over, but nothing concluded: never "next"
    deadline = policy.analysis.inconclusive_deadline_s
    act = next_action(policy, act.state, result(Phase.INCONCLUSIVE, "metric absent"), now=5 + deadline - 1, hold_s=20)
    assert act.kind == "wait"  # one second short of the deadline
    act = next_action(policy, act.state, result(Phase.INCONCLUSIVE, "metric absent"), now=6 + deadline, hold_s=20)
    assert act.kind == "abort" and f"inconclusive for {deadline + 1:.0f} s" in act.reason


def test_window_never_reaches_before_the_step(policy):
    s = StepState(weight=25, started=100.0)
    assert an.window_for(policy, s, 101.0) == policy.analysis.interval_s
    since = policy.analysis.interval_s + 7  # past one interval, inside the window: the time since the step
    assert an.window_for(policy, s, 100.0 + since) == since
    assert an.window_for(policy, s, 1000.0) == policy.analysis.window_s


# -- the policy file -----------------------------------------------------------------------


def test_both_policy_files_parse_and_describe_themselves():
    prod = load_policy()
    assert [s.weight for s in prod.steps] == [5, 25, 50, 100]
    assert prod.analysis.min_requests_per_arm == 1000 and prod.checks.quality.source == "requestlog"
    emb = load_policy(EMBEDDED)
    assert emb.total_hold_s() < 120 and emb.checks.quality.source == "prometheus"
    assert "5 % (20 s) -> 25 %" in emb.describe()
    assert [s.hold_s for s in emb.with_hold(7).steps] == [7.0] * 4


GOOD = "steps:\n  - {weight: 10, hold_s: 5}\n  - {weight: 100, hold_s: 5}\n"


@pytest.mark.parametrize(("text", "message"), [
    ("steps: []\n", "steps: must be a non-empty list"),
    ("steps:\n  - {weight: 50, hold_s: 5}\n", "steps[0].weight: the last step must be 100"),
    ("steps:\n  - {weight: 50, hold_s: 5}\n  - {weight: 40, hold_s: 5}\n  - {weight: 100, hold_s: 1}\n",
     "steps[1].weight: 40 must be above"),
    ("steps:\n  - {weight: 100, hold_s: 0}\n", "steps[0].hold_s: 0 must be > 0"),
    ("steps:\n  - {weight: 100, hold: 5}\n", "steps[0].hold: unknown field"),
    (GOOD + "analysis: {interval_s: -1}\n", "analysis.interval_s: -1 must be > 0"),
    (GOOD + "analysis: {max_failed_checks: 0}\n", "analysis.max_failed_checks: 0 must be an integer >= 1"),
    (GOOD + "analysis: {interval_s: 10, inconclusive_deadline_s: 5}\n", "analysis.inconclusive_deadline_s"),
    (GOOD + "checks: {error_ratio: {max: .nan}}\n", "checks.error_ratio.max: nan is not a finite number"),
    (GOOD + "checks: {latency_p95_s: {max_ratio_vs_stable: 0.5}}\n", "must be >= 1"),
    (GOOD + "checks: {quality: {source: csv}}\n", "checks.quality.source: 'csv' must be one of"),
    (GOOD + "checks: {colour: {}}\n", "checks.colour: unknown field"),
    (GOOD + "metrics: {requests: 'bad name'}\n", "metrics.requests: 'bad name' is not a Prometheus name"),
    ("steps: [\n", "not valid YAML"),
])
def test_bad_policy_is_one_line_naming_the_field(text, message):
    with pytest.raises(BadInput) as err:
        parse_policy(text, "p.yaml")
    assert message in str(err.value) and str(err.value).startswith("p.yaml: ")
    assert "\n" not in str(err.value)


def test_nan_never_passes_a_bound(policy):
    q = fake_prometheus(policy, {"canary": arm_data(p95=math.nan), "stable": arm_data()})
    assert analyse(policy, q, model="m", weight=25, window_s=30).phase is Phase.INCONCLUSIVE
