"""The model registry side of Tollgate: versions from S3, prompts, aliases and their audit trail.

    ref = register_prompt("smollm2-orders", template, {"temperature": 0.0, "max_tokens": 32})
    mv = register_model_version("smollm2-orders", "s3://models/smollm2-orders/2", manifest_sha,
                                prompt=ref, generation_params={"temperature": 0.0, "max_tokens": 32})
    move_alias("smollm2-orders", "champion", mv.version, actor="alice",
               reason="approved in model_promotion", evidence_run_id=parent_run_id)
    alias_history("smollm2-orders", "champion")          # -> [AliasAuditRecord, ...]
    rollback_alias("smollm2-orders", "champion", actor="canary", reason="error rate 4%")

Aliases move only through ``move_alias``/``rollback_alias``, and each move writes its audit
record first (see ``tollgate.mlflow.audit`` for the storage); a promotion that ends without a
move is recorded with ``record_decision``. This module decides (what may move, where an alias
points now); ``audit`` only stores what it is handed. The prompt's alias of the same name follows
(``prompts:/NAME.prompt@champion`` is the champion's prompt). Moving an alias to where it
already points changes nothing and writes nothing: re-running a promotion that already
happened is a no-op (``AliasMove.changed`` is False).

Same-alias moves are expected to be serialized by the caller (``model_promotion`` runs one
DAG run per model at a time); MLflow has no compare-and-set on aliases. Records are never
lost under concurrency, and a record left ``pending`` by a crash between writing it and
moving the alias is settled by the next ``move_alias`` of that alias.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from evals.contract import MODEL_NAME_PATTERN, is_model_name, is_model_version
from tollgate.exceptions import AliasConflict, RegistryError
from tollgate.mlflow import audit
from tollgate.mlflow.audit import AliasAuditRecord, format_alias_history
from tollgate.mlflow.tracking import client, latest_results

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("tollgate.registry")

CHAMPION, CHALLENGER, STAGING = "champion", "challenger", "staging"
ALIASES = (CHAMPION, CHALLENGER, STAGING)

TAG_SOURCE = "tollgate.s3_source"
TAG_MANIFEST_SHA = "tollgate.manifest_sha256"
TAG_PROMPT_NAME = "tollgate.prompt_name"
TAG_PROMPT_VERSION = "tollgate.prompt_version"
TAG_PROMPT_URI = "tollgate.prompt_uri"
TAG_GEN_PARAMS = "tollgate.generation_params"
PROMPT_SUFFIX = ".prompt"  # prompts share the registered-model namespace, so they need their own name

_SHA256 = re.compile(r"[0-9a-f]{64}")
_ANY = object()  # move_alias(expect_from=...) not given: no comparison

__all__ = [
    "ALIASES", "CHALLENGER", "CHAMPION", "STAGING", "AliasAuditRecord", "AliasMove", "PromptRef", "ServingConfig",
    "alias_history", "champion_results", "format_alias_history", "get_alias", "get_aliases",
    "model_version_exists", "models_with_alias", "move_alias", "prompt_name", "record_decision",
    "register_model_version", "register_prompt", "rollback_alias", "serving_config",
]


@dataclass(frozen=True)
class AliasMove:
    """What ``move_alias``/``rollback_alias`` did. ``record`` is None when nothing changed."""

    model: str
    alias: str
    from_version: str | None
    to_version: str | None
    changed: bool
    record: AliasAuditRecord | None = None


@dataclass(frozen=True)
class PromptRef:
    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"


@dataclass(frozen=True)
class ServingConfig:
    """Everything that defines a model version at serving time: weights, prompt, parameters."""

    model: str
    version: str
    source: str
    manifest_sha256: str | None
    prompt: PromptRef | None
    template: str | list[dict[str, Any]] | None
    generation_params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompt"] = None if self.prompt is None else {**asdict(self.prompt), "uri": self.prompt.uri}
        return d


# -- helpers --------------------------------------------------------------------------------


def _check_model(model: str) -> None:
    if not is_model_name(model):
        raise RegistryError(f"model name {model!r} must match {MODEL_NAME_PATTERN}")


def _check_alias(alias: str) -> None:
    if alias not in ALIASES:
        raise RegistryError(f"alias {alias!r} is not one of {', '.join(ALIASES)}")


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _ensure_registered_model(c: MlflowClient, model: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        c.create_registered_model(model, tags={"tollgate.managed": "true"})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _versions(c: MlflowClient, model: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        return list(c.search_model_versions(f"name = '{model}'", max_results=10000))
    except MlflowException as exc:
        if _not_found(exc):
            return []
        raise


# -- prompts ----------------------------------------------------------------------------------


def prompt_name(model: str) -> str:
    return model + PROMPT_SUFFIX


def register_prompt(
    model: str,
    template: str | list[dict[str, Any]],
    generation_params: dict[str, Any] | None = None,
    *,
    commit_message: str | None = None,
    tracking_uri: str | None = None,
) -> PromptRef:
    """A new version of the model's prompt (``NAME.prompt``) in MLflow's prompt registry.

    ``template`` uses MLflow's ``{{variable}}`` syntax, a string or chat messages;
    ``generation_params`` (temperature, max_tokens, top_p, stop_sequences, ...) are kept
    as the prompt version's model config. Registering the same template and parameters
    as the latest version returns that version instead of a duplicate (safe to retry).
    """
    _check_model(model)
    c = client(tracking_uri)
    name = prompt_name(model)
    params = dict(generation_params or {})
    latest = _latest_prompt_version(c, name)
    if latest is not None and latest.template == template and _prompt_params(latest) == params:
        return PromptRef(name, str(latest.version))
    pv = c.register_prompt(name=name, template=template, commit_message=commit_message,
                           tags={"tollgate.model": model}, model_config=params or None)
    return PromptRef(name, str(pv.version))


def _latest_prompt_version(c: MlflowClient, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return c.load_prompt(f"prompts:/{name}@latest", allow_missing=True)
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise


def _prompt_params(pv: Any) -> dict[str, Any]:
    return dict(getattr(pv, "model_config", None) or {})


# -- model versions -------------------------------------------------------------------------


def register_model_version(
    model: str,
    source: str,
    manifest_sha256: str,
    *,
    prompt: PromptRef | None = None,
    generation_params: dict[str, Any] | None = None,
    description: str | None = None,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
    tracking_uri: str | None = None,
) -> Any:
    """Register weights that live in S3 as a new model version; MLflow never reads S3.

    ``source`` is the ``s3://bucket/models/NAME/VERSION`` prefix holding weights and
    manifest; it becomes the version's source and the ``tollgate.s3_source`` tag, the
    manifest's sha256 the ``tollgate.manifest_sha256`` tag. Registering the same source
    again with the same manifest, prompt and parameters returns the existing version (a
    retried task does not make a twin); the same source with anything different is refused.
    Two versions may share a manifest (same weights) and differ only in prompt or
    parameters: publish each to its own prefix. Returns the MLflow ``ModelVersion``.
    """
    _check_model(model)
    if not isinstance(source, str) or not re.fullmatch(r"s3://[^/\s]+/\S+", source):
        raise RegistryError(f"source {source!r} must be an s3://bucket/prefix URI")
    if not isinstance(manifest_sha256, str) or not _SHA256.fullmatch(manifest_sha256):
        raise RegistryError(f"manifest_sha256 {manifest_sha256!r} must be 64 lowercase hex digits")
    identity = {TAG_SOURCE: source, TAG_MANIFEST_SHA: manifest_sha256}
    if prompt is not None:
        identity.update({TAG_PROMPT_NAME: prompt.name, TAG_PROMPT_VERSION: prompt.version, TAG_PROMPT_URI: prompt.uri})
    if generation_params is not None:
        identity[TAG_GEN_PARAMS] = json.dumps(generation_params, sort_keys=True)
    c = client(tracking_uri)
    _ensure_registered_model(c, model)
    for mv in _versions(c, model):
        if mv.tags.get(TAG_SOURCE) == source:
            differs = sorted(k for k in {*identity, TAG_PROMPT_URI, TAG_GEN_PARAMS}
                             if mv.tags.get(k) != identity.get(k))
            if differs:
                raise RegistryError(
                    f"{model} version {mv.version} already registers {source} with different {', '.join(differs)}: "
                    "publish a new version to a new prefix")
            return mv
    all_tags = {**(tags or {}), **identity}
    # create_model_version goes straight to the registry REST API with the URI as given:
    # unlike mlflow.register_model it does not resolve or copy artifacts.
    return c.create_model_version(model, source, run_id=run_id, tags=all_tags, description=description,
                                  await_creation_for=0)


def model_version_exists(model: str, version: str, *, tracking_uri: str | None = None) -> bool:
    """True when model:version is registered (for validating a DAG's Params)."""
    from mlflow.exceptions import MlflowException

    if not is_model_name(str(model)) or not is_model_version(str(version)):
        return False
    try:
        client(tracking_uri).get_model_version(model, str(version))
    except MlflowException as exc:
        if _not_found(exc) or exc.error_code == "INVALID_PARAMETER_VALUE":
            return False
        raise
    return True


def serving_config(model: str, version: str, *, tracking_uri: str | None = None) -> ServingConfig:
    """The source, manifest, prompt template and generation parameters of model:version."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        mv = c.get_model_version(model, str(version))
    except MlflowException as exc:
        if _not_found(exc):
            raise RegistryError(f"{model}:{version} is not registered") from None
        raise
    tags = mv.tags
    prompt = None
    template = None
    params: dict[str, Any] = json.loads(tags[TAG_GEN_PARAMS]) if TAG_GEN_PARAMS in tags else {}
    if TAG_PROMPT_NAME in tags:
        prompt = PromptRef(tags[TAG_PROMPT_NAME], tags[TAG_PROMPT_VERSION])
        pv = c.load_prompt(prompt.uri)
        template = pv.template
        params = {**_prompt_params(pv), **params}
    return ServingConfig(model=model, version=str(mv.version), source=str(tags.get(TAG_SOURCE, mv.source)),
                         manifest_sha256=tags.get(TAG_MANIFEST_SHA), prompt=prompt, template=template,
                         generation_params=params)


# -- aliases ----------------------------------------------------------------------------------


def get_alias(model: str, alias: str, *, tracking_uri: str | None = None,
              mlflow_client: MlflowClient | None = None) -> str | None:
    """The version an alias points to, or None when it is unset (or the model does not exist)."""
    from mlflow.exceptions import MlflowException

    _check_alias(alias)
    c = mlflow_client or client(tracking_uri)
    try:
        return str(c.get_model_version_by_alias(model, alias).version)
    except MlflowException as exc:
        if _not_found(exc) or exc.error_code == "INVALID_PARAMETER_VALUE":
            return None
        raise


def get_aliases(model: str, *, tracking_uri: str | None = None) -> dict[str, str]:
    """alias -> version for every alias set on the model."""
    from mlflow.exceptions import MlflowException

    try:
        rm = client(tracking_uri).get_registered_model(model)
    except MlflowException as exc:
        if _not_found(exc):
            return {}
        raise
    return {a: str(v) for a, v in (rm.aliases or {}).items()}


def models_with_alias(alias: str = CHAMPION, *, tracking_uri: str | None = None) -> dict[str, str]:
    """model -> version for every registered model (not prompt) that has ``alias`` set."""
    _check_alias(alias)
    c = client(tracking_uri)
    out: dict[str, str] = {}
    token = None
    while True:
        page = c.search_registered_models(max_results=1000, page_token=token)
        for rm in page:
            if rm.name.endswith(PROMPT_SUFFIX) or "mlflow.prompt.is_prompt" in (rm.tags or {}):
                continue
            if alias in (rm.aliases or {}):
                out[rm.name] = str(rm.aliases[alias])
        token = page.token
        if not token:
            return out


def _settle_pending(c: MlflowClient, model: str, alias: str, current: str | None) -> None:
    """Settle records a crash left pending: applied if the alias got there, failed if not."""
    for rec in audit.list_records(c, model, alias):
        if rec.status == audit.PENDING:
            audit.set_status(c, rec, audit.APPLIED if rec.to_version == current else audit.FAILED)


def _apply(
    c: MlflowClient, model: str, alias: str, current: str | None, to_version: str | None, *, actor: str,
    reason: str, evidence_run_id: str | None, action: str, rolls_back: str | None, dag_id: str | None,
    dag_run_id: str | None,
) -> AliasMove:
    record = audit.write_pending(
        c, model=model, alias=alias, from_version=current, to_version=to_version, actor=actor, reason=reason,
        evidence_run_id=evidence_run_id, action=action, rolls_back=rolls_back, dag_id=dag_id, dag_run_id=dag_run_id)
    try:
        if to_version is None:
            c.delete_registered_model_alias(model, alias)
        else:
            c.set_registered_model_alias(model, alias, to_version)
    except BaseException:
        audit.set_status(c, record, audit.FAILED)
        raise
    record = audit.set_status(c, record, audit.APPLIED)
    _follow_with_prompt(c, model, alias, to_version)
    return AliasMove(model=model, alias=alias, from_version=current, to_version=to_version, changed=True,
                     record=record)


def _follow_with_prompt(c: MlflowClient, model: str, alias: str, to_version: str | None) -> None:
    """Point the prompt's alias of the same name at the version's prompt, so that
    ``prompts:/NAME.prompt@champion`` is the champion's prompt. Best effort: the model
    alias (and the prompt tags on each model version) stay the source of truth.
    """
    from mlflow.exceptions import MlflowException

    name = prompt_name(model)
    try:
        if to_version is None:
            if _latest_prompt_version(c, name) is not None:
                c.delete_prompt_alias(name, alias)
            return
        tags = c.get_model_version(model, to_version).tags
        if TAG_PROMPT_NAME in tags:
            c.set_prompt_alias(tags[TAG_PROMPT_NAME], alias, int(tags[TAG_PROMPT_VERSION]))
        elif _latest_prompt_version(c, name) is not None:
            c.delete_prompt_alias(name, alias)  # this version has no prompt: do not leave a stale one
    except MlflowException as exc:
        log.warning("%s alias %s moved, but the prompt alias did not follow: %s", model, alias, exc)


def _check_actor(actor: str, reason: str) -> None:
    if not isinstance(actor, str) or not actor.strip():
        raise RegistryError("actor is required: who approved or triggered the move")
    if not isinstance(reason, str) or not reason.strip():
        raise RegistryError("reason is required: why the alias moves")


def move_alias(
    model: str,
    alias: str,
    to_version: str | int,
    actor: str,
    reason: str,
    evidence_run_id: str | None = None,
    *,
    dag_id: str | None = None,
    dag_run_id: str | None = None,
    tracking_uri: str | None = None,
    expect_from: str | None | object = _ANY,
) -> AliasMove:
    """Point ``alias`` at ``to_version``, writing the audit record first.

    A no-op (``changed=False``, nothing written) when the alias already points there.
    ``expect_from`` (a version, or None for "unset") is where the caller saw the alias when
    it decided; if the alias points anywhere else now, someone moved it meanwhile and
    AliasConflict is raised with nothing written: a promotion never overwrites another.
    Raises RegistryError for an unknown alias or version, or a missing actor/reason.
    """
    from mlflow.exceptions import MlflowException

    _check_model(model)
    _check_alias(alias)
    _check_actor(actor, reason)
    to_version = str(to_version)
    c = client(tracking_uri)
    try:
        c.get_model_version(model, to_version)
    except MlflowException as exc:
        if _not_found(exc) or exc.error_code == "INVALID_PARAMETER_VALUE":
            raise RegistryError(f"{model}:{to_version} is not registered") from None
        raise
    current = get_alias(model, alias, mlflow_client=c)
    _settle_pending(c, model, alias, current)
    if current == to_version:
        return AliasMove(model=model, alias=alias, from_version=current, to_version=to_version, changed=False)
    if expect_from is not _ANY and current != (None if expect_from is None else str(expect_from)):
        raise AliasConflict(f"{model} alias {alias} points to {current or 'nothing'}, not {expect_from or 'nothing'} "
                            f"as when this promotion decided: someone else moved it; refusing to overwrite")
    return _apply(c, model, alias, current, to_version, actor=actor, reason=reason,
                  evidence_run_id=evidence_run_id, action="move", rolls_back=None, dag_id=dag_id,
                  dag_run_id=dag_run_id)


def rollback_alias(
    model: str,
    alias: str,
    actor: str,
    reason: str,
    evidence_run_id: str | None = None,
    *,
    dag_id: str | None = None,
    dag_run_id: str | None = None,
    tracking_uri: str | None = None,
) -> AliasMove:
    """Undo the last applied move of ``alias``: restore its previous target (from the history).

    If the alias had no target before that move, the alias is removed. Refuses (RegistryError)
    when the alias was moved outside Tollgate since its last audited move, or never moved.
    Rolling back twice re-applies the undone move (each rollback undoes the newest move).
    """
    _check_model(model)
    _check_alias(alias)
    _check_actor(actor, reason)
    c = client(tracking_uri)
    current = get_alias(model, alias, mlflow_client=c)
    _settle_pending(c, model, alias, current)
    last = audit.previous_target(audit.list_records(c, model, alias), alias, current)
    if last is None:
        raise RegistryError(
            f"{model} alias {alias} points to {current or 'nothing'} and no audited move put it there: "
            "nothing to roll back to (moved outside Tollgate, or never moved)")
    return _apply(c, model, alias, current, last.from_version, actor=actor, reason=reason,
                  evidence_run_id=evidence_run_id, action="rollback", rolls_back=last.record_id, dag_id=dag_id,
                  dag_run_id=dag_run_id)


def record_decision(
    model: str,
    alias: str,
    version: str | int,
    *,
    decision: str,
    actor: str,
    reason: str,
    evidence_run_id: str | None = None,
    dag_id: str | None = None,
    dag_run_id: str | None = None,
    tracking_uri: str | None = None,
) -> AliasAuditRecord:
    """Audit a promotion of ``version`` to ``alias`` that ended without a move.

    ``decision`` names it (rejected, timed_out, rolled_back, gate_failed, ...): a
    lower_snake_case word other than move/rollback. The record shows where the alias
    stayed (from = to = its current target); rollbacks never undo it. Raises RegistryError
    for a bad model, alias or decision, or a missing actor/reason.
    """
    _check_model(model)
    _check_alias(alias)
    if not isinstance(decision, str) or not audit.DECISION.fullmatch(decision) or decision in ("move", "rollback"):
        raise RegistryError(f"decision {decision!r} must be a lower_snake_case word other than move/rollback")
    if not str(actor).strip() or not str(reason).strip():
        raise RegistryError("actor and reason are required for an audit record")
    c = client(tracking_uri)
    return audit.write_decision(c, model=model, alias=alias, current=get_alias(model, alias, mlflow_client=c),
                                candidate_version=version, decision=decision, actor=actor, reason=reason,
                                evidence_run_id=evidence_run_id, dag_id=dag_id, dag_run_id=dag_run_id)


def alias_history(model: str, alias: str | None = None, *, tracking_uri: str | None = None) -> list[AliasAuditRecord]:
    """Every audit record of the model's aliases (or one alias), oldest first."""
    if alias is not None:
        _check_alias(alias)
    return audit.list_records(client(tracking_uri), model, alias)


def champion_results(model: str, suite: str, *, tracking_uri: str | None = None) -> dict[str, Any] | None:
    """The champion's last results JSON for ``suite`` (regression baseline), or None."""
    version = get_alias(model, CHAMPION, tracking_uri=tracking_uri)
    return None if version is None else latest_results(model, version, suite, tracking_uri=tracking_uri)
