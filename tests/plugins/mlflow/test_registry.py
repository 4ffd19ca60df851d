"""tollgate.mlflow.registry: versions, prompts, aliases and their audit records, against a real MLflow server."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest

from tollgate.exceptions import RegistryError
from tollgate.mlflow import audit, registry, tracking

SHA_A = hashlib.sha256(b"weights-a").hexdigest()
SHA_B = hashlib.sha256(b"weights-b").hexdigest()
TEMPLATE_V1 = [{"role": "system", "content": "Normalize the order line."}, {"role": "user", "content": "{{prompt}}"}]
TEMPLATE_V2 = [{"role": "system", "content": "Rewrite as '<qty>x <Size> <Item>'."},
               {"role": "user", "content": "{{prompt}}"}]


def _register(model: str, uri: str, n: int, sha: str = SHA_A, prompt: registry.PromptRef | None = None) -> str:
    mv = registry.register_model_version(model, f"s3://models/{model}/{n}", sha, prompt=prompt, tracking_uri=uri)
    return str(mv.version)


# -- model versions and prompts ---------------------------------------------------------------


def test_register_version_from_s3_carries_source_and_manifest_and_is_idempotent(uri: str, model: str) -> None:
    source = f"s3://models/{model}/1"
    mv = registry.register_model_version(model, source, SHA_A, description="v1", tracking_uri=uri)
    assert mv.source == source
    assert mv.tags[registry.TAG_SOURCE] == source
    assert mv.tags[registry.TAG_MANIFEST_SHA] == SHA_A
    assert mv.status == "READY"
    again = registry.register_model_version(model, source, SHA_A, tracking_uri=uri)
    assert again.version == mv.version  # a retried registration makes no twin
    with pytest.raises(RegistryError, match="manifest"):
        registry.register_model_version(model, source, SHA_B, tracking_uri=uri)
    with pytest.raises(RegistryError, match="s3://"):
        registry.register_model_version(model, "/tmp/weights", SHA_A, tracking_uri=uri)
    with pytest.raises(RegistryError, match="sha256"):
        registry.register_model_version(model, f"s3://models/{model}/9", "abc", tracking_uri=uri)
    assert registry.model_version_exists(model, mv.version, tracking_uri=uri)
    assert not registry.model_version_exists(model, "99", tracking_uri=uri)
    assert not registry.model_version_exists(model, "1; rm -rf /", tracking_uri=uri)
    assert not registry.model_version_exists("no-such-model", "1", tracking_uri=uri)


def test_versions_can_differ_only_in_prompt_and_parameters(uri: str, model: str) -> None:
    p1 = registry.register_prompt(model, TEMPLATE_V1, {"temperature": 0.0, "max_tokens": 24}, tracking_uri=uri)
    assert registry.register_prompt(model, TEMPLATE_V1, {"temperature": 0.0, "max_tokens": 24},
                                    tracking_uri=uri) == p1  # same prompt again: no new version
    p2 = registry.register_prompt(model, TEMPLATE_V2, {"temperature": 0.2, "max_tokens": 32},
                                  commit_message="stricter format", tracking_uri=uri)
    assert (p1.name, p2.name) == (f"{model}.prompt", f"{model}.prompt")
    assert int(p2.version) == int(p1.version) + 1
    v1 = registry.register_model_version(model, f"s3://models/{model}/1", SHA_A, prompt=p1,
                                         generation_params={"temperature": 0.0, "max_tokens": 24}, tracking_uri=uri)
    v2 = registry.register_model_version(model, f"s3://models/{model}/2", SHA_A, prompt=p2,
                                         generation_params={"temperature": 0.2, "max_tokens": 32}, tracking_uri=uri)
    c1 = registry.serving_config(model, v1.version, tracking_uri=uri)
    c2 = registry.serving_config(model, v2.version, tracking_uri=uri)
    assert c1.manifest_sha256 == c2.manifest_sha256 == SHA_A  # same weights
    assert c1.template == TEMPLATE_V1 and c2.template == TEMPLATE_V2
    assert c1.generation_params == {"temperature": 0.0, "max_tokens": 24}
    assert c2.generation_params == {"temperature": 0.2, "max_tokens": 32}
    assert c2.prompt == p2 and c2.to_dict()["prompt"]["uri"] == f"prompts:/{model}.prompt/{p2.version}"
    json.dumps(c2.to_dict())  # the DAG hands it to pods as a JSON file
    # Re-registering v2's prefix with v1's prompt is a different version, not a retry: refused.
    with pytest.raises(RegistryError, match="prompt"):
        registry.register_model_version(model, f"s3://models/{model}/2", SHA_A, prompt=p1,
                                        generation_params={"temperature": 0.2, "max_tokens": 32}, tracking_uri=uri)
    # Prompts share the registered-model namespace but are never listed as models.
    registry.move_alias(model, "champion", v1.version, "alice", "first champion", tracking_uri=uri)
    c = tracking.client(uri)
    # The prompt's alias follows the model's: prompts:/NAME.prompt@champion is the champion's prompt.
    assert c.load_prompt(f"prompts:/{model}.prompt@champion").template == TEMPLATE_V1
    registry.move_alias(model, "champion", v2.version, "alice", "v2", tracking_uri=uri)
    assert c.load_prompt(f"prompts:/{model}.prompt@champion").template == TEMPLATE_V2
    registry.rollback_alias(model, "champion", "ops", "back to v1", tracking_uri=uri)
    assert c.load_prompt(f"prompts:/{model}.prompt@champion").template == TEMPLATE_V1
    listed = registry.models_with_alias("champion", tracking_uri=uri)
    assert listed[model] == str(v1.version)
    assert not any(name.endswith(".prompt") for name in listed)
    with pytest.raises(RegistryError):
        registry.serving_config(model, "42", tracking_uri=uri)


# -- aliases and the audit trail -----------------------------------------------------------------


def test_move_alias_writes_audit_record_and_is_idempotent(uri: str, model: str) -> None:
    v1, v2 = _register(model, uri, 1), _register(model, uri, 2)
    assert registry.get_alias(model, "champion", tracking_uri=uri) is None

    first = registry.move_alias(model, "champion", v1, "alice", "initial champion", "run-1", tracking_uri=uri,
                                dag_id="model_promotion", dag_run_id="manual__1")
    assert first.changed and first.from_version is None and first.to_version == v1
    assert registry.get_alias(model, "champion", tracking_uri=uri) == v1
    rec = first.record
    assert rec is not None and rec.status == audit.APPLIED
    assert (rec.actor, rec.reason, rec.evidence_run_id, rec.dag_id, rec.dag_run_id) == (
        "alice", "initial champion", "run-1", "model_promotion", "manual__1")
    assert rec.recorded_utc.endswith("Z") and rec.recorded_utc[:4].isdigit()

    again = registry.move_alias(model, "champion", v1, "bob", "re-run of the same promotion", tracking_uri=uri)
    assert not again.changed and again.record is None
    assert len(registry.alias_history(model, tracking_uri=uri)) == 1  # the no-op wrote nothing

    second = registry.move_alias(model, "champion", v2, "bob", "v2 approved", "run-2", tracking_uri=uri)
    assert second.changed and (second.from_version, second.to_version) == (v1, v2)
    registry.move_alias(model, "staging", v2, "ci", "staging deploy", tracking_uri=uri)
    assert registry.get_aliases(model, tracking_uri=uri) == {"champion": v2, "staging": v2}

    history = registry.alias_history(model, tracking_uri=uri)
    assert [(r.alias, r.from_version, r.to_version, r.actor) for r in history] == [
        ("champion", None, v1, "alice"), ("champion", v1, v2, "bob"), ("staging", None, v2, "ci")]
    assert [r.alias for r in registry.alias_history(model, "staging", tracking_uri=uri)] == ["staging"]
    assert all(r.status == audit.APPLIED for r in history)
    assert history == sorted(history, key=lambda r: r.seq)

    table = registry.format_alias_history(history)
    lines = table.splitlines()
    assert len(lines) == 2 + 3
    assert "| champion | 1 | 2 | 2 | bob | v2 approved | run-2 | move | applied |" in lines[3]


def test_decisions_that_move_nothing_are_recorded_and_never_rolled_back(uri: str, model: str) -> None:
    v1, v2 = _register(model, uri, 1), _register(model, uri, 2)
    registry.move_alias(model, "champion", v1, "alice", "v1", tracking_uri=uri)
    rec = registry.record_decision(model, "champion", v2, decision="rejected", actor="bob",
                                   reason="latency too close to budget", evidence_run_id="run-9",
                                   dag_id="model_promotion", dag_run_id="manual__2", tracking_uri=uri)
    assert (rec.action, rec.status, rec.from_version, rec.to_version, rec.candidate_version) == (
        "rejected", audit.RECORDED, v1, v1, v2)
    c = tracking.client(uri)
    assert c.get_run(rec.record_id).info.status == "FINISHED"
    registry.record_decision(model, "champion", v2, decision="rolled_back", actor="canary",
                             reason="canary error rate 4%", evidence_run_id="canary-run", tracking_uri=uri)
    assert registry.get_alias(model, "champion", tracking_uri=uri) == v1
    history = registry.alias_history(model, "champion", tracking_uri=uri)
    assert [(r.action, r.status, r.candidate_version) for r in history] == [
        ("move", audit.APPLIED, v1), ("rejected", audit.RECORDED, v2), ("rolled_back", audit.RECORDED, v2)]
    assert "| rejected | recorded |" in registry.format_alias_history(history)
    # A rollback undoes the last move, not a decision: the champion had no target before v1.
    registry.rollback_alias(model, "champion", "ops", "undo v1", tracking_uri=uri)
    assert registry.get_alias(model, "champion", tracking_uri=uri) is None
    for bad in ("", "Approved!", "move", "rollback"):
        with pytest.raises(RegistryError):
            registry.record_decision(model, "champion", v2, decision=bad, actor="x", reason="y", tracking_uri=uri)
    with pytest.raises(RegistryError):
        registry.record_decision(model, "champion", v2, decision="rejected", actor="", reason="y", tracking_uri=uri)


def test_refused_moves_write_nothing(uri: str, model: str) -> None:
    v1 = _register(model, uri, 1)
    with pytest.raises(RegistryError, match="not registered"):
        registry.move_alias(model, "champion", "99", "alice", "typo", tracking_uri=uri)
    with pytest.raises(RegistryError, match="alias"):
        registry.move_alias(model, "production", v1, "alice", "not an alias we manage", tracking_uri=uri)
    with pytest.raises(RegistryError, match="actor"):
        registry.move_alias(model, "champion", v1, " ", "no actor", tracking_uri=uri)
    with pytest.raises(RegistryError, match="reason"):
        registry.move_alias(model, "champion", v1, "alice", "", tracking_uri=uri)
    assert registry.alias_history(model, tracking_uri=uri) == []
    assert registry.get_aliases(model, tracking_uri=uri) == {}


def test_rollback_restores_previous_target_from_history(uri: str, model: str) -> None:
    v1, v2 = _register(model, uri, 1), _register(model, uri, 2)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback_alias(model, "champion", "canary", "never moved", tracking_uri=uri)
    registry.move_alias(model, "champion", v1, "alice", "v1", tracking_uri=uri)
    promoted = registry.move_alias(model, "champion", v2, "alice", "v2", tracking_uri=uri)

    back = registry.rollback_alias(model, "champion", "canary", "error rate 4% > 2%", "canary-run", tracking_uri=uri)
    assert registry.get_alias(model, "champion", tracking_uri=uri) == v1
    assert back.record is not None and promoted.record is not None
    assert (back.from_version, back.to_version, back.record.action) == (v2, v1, "rollback")
    assert back.record.rolls_back == promoted.record.record_id
    assert back.record.evidence_run_id == "canary-run"

    # Each rollback undoes the newest applied move: a second one re-applies v2.
    registry.rollback_alias(model, "champion", "ops", "undo the rollback", tracking_uri=uri)
    assert registry.get_alias(model, "champion", tracking_uri=uri) == v2

    # An alias whose first move is rolled back is removed again.
    registry.move_alias(model, "challenger", v2, "retrain", "new challenger", tracking_uri=uri)
    cleared = registry.rollback_alias(model, "challenger", "ops", "bad retrain", tracking_uri=uri)
    assert cleared.to_version is None
    assert registry.get_alias(model, "challenger", tracking_uri=uri) is None
    actions = [(r.alias, r.action, r.from_version, r.to_version) for r in registry.alias_history(model, tracking_uri=uri)]
    assert actions == [("champion", "move", None, v1), ("champion", "move", v1, v2),
                       ("champion", "rollback", v2, v1), ("champion", "rollback", v1, v2),
                       ("challenger", "move", None, v2), ("challenger", "rollback", v2, None)]


def test_rollback_refuses_when_alias_moved_outside_tollgate(uri: str, model: str) -> None:
    v1, v2 = _register(model, uri, 1), _register(model, uri, 2)
    registry.move_alias(model, "champion", v1, "alice", "v1", tracking_uri=uri)
    tracking.client(uri).set_registered_model_alias(model, "champion", v2)  # someone used the MLflow UI
    with pytest.raises(RegistryError, match="outside Tollgate"):
        registry.rollback_alias(model, "champion", "canary", "should not guess", tracking_uri=uri)
    assert registry.get_alias(model, "champion", tracking_uri=uri) == v2
    # A later audited move records where the alias really was.
    moved = registry.move_alias(model, "champion", v1, "alice", "back to the audited target", tracking_uri=uri)
    assert moved.from_version == v2


def test_pending_records_left_by_a_crash_are_settled(uri: str, model: str) -> None:
    v1, v2 = _register(model, uri, 1), _register(model, uri, 2)
    c = tracking.client(uri)
    # Crash after the record, before the alias moved: settled as failed.
    lost = audit.write_pending(c, model=model, alias="champion", from_version=None, to_version=v2,
                               actor="alice", reason="crashed", evidence_run_id=None)
    # Crash after the alias moved, before the record was marked applied: settled as applied.
    done = audit.write_pending(c, model=model, alias="champion", from_version=None, to_version=v1,
                               actor="alice", reason="alias moved, process died", evidence_run_id=None)
    c.set_registered_model_alias(model, "champion", v1)
    retry = registry.move_alias(model, "champion", v1, "alice", "task retry", tracking_uri=uri)
    assert not retry.changed
    status = {r.record_id: r.status for r in registry.alias_history(model, tracking_uri=uri)}
    assert status == {lost.record_id: audit.FAILED, done.record_id: audit.APPLIED}
    assert c.get_run(lost.record_id).info.status == "FAILED"
    assert c.get_run(done.record_id).info.status == "FINISHED"
    # A rollback now undoes the applied one only: back to no champion.
    registry.rollback_alias(model, "champion", "ops", "undo", tracking_uri=uri)
    assert registry.get_alias(model, "champion", tracking_uri=uri) is None


def test_concurrent_writers_lose_no_audit_record(uri: str, model: str) -> None:
    versions = [_register(model, uri, n) for n in (1, 2, 3)]
    errors: list[BaseException] = []

    def mover(alias: str) -> None:
        try:
            for v in versions:
                registry.move_alias(model, alias, v, f"writer-{alias}", f"{alias} -> {v}", tracking_uri=uri)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=mover, args=(a,)) for a in registry.ALIASES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    history = registry.alias_history(model, tracking_uri=uri)
    assert len(history) == 9
    for alias in registry.ALIASES:
        chain = [(r.from_version, r.to_version) for r in history if r.alias == alias]
        assert chain == [(None, "1"), ("1", "2"), ("2", "3")]
    assert registry.get_aliases(model, tracking_uri=uri) == dict.fromkeys(registry.ALIASES, "3")
