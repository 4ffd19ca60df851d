"""PodStep and its parts validate themselves and refuse what would be unsafe or wrong."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollgate import constants as c
from tollgate.exceptions import TollgateError
from tollgate.podspec import ModelVolume, PodStep, Resources, ResultsLocation, SecretEnv, Toleration

CMD = ("python", "-m", "evals.run")


def make(**overrides):
    fields = {"name": "eval-quality", "command": CMD}
    fields.update(overrides)
    return PodStep(**fields)


def test_a_full_step_keeps_what_it_was_given():
    step = make(
        args=["--suite", "quality", "--output", "/results/q.json"],
        env={"TOLLGATE_LOG_LEVEL": "DEBUG"},
        secret_env=[SecretEnv("OPENAI_API_KEY", secret="judge-llm", key="api-key")],
        resources=Resources(cpu="500m", memory="4Gi", gpu=2),
        tolerations=[Toleration.gpu()],
        node_selector={"nvidia.com/gpu.present": "true"},
        volume=ModelVolume.for_reading(),
        results=ResultsLocation.on_volume("nightly/q.json"),
        service_account="tollgate-canary",
    )
    assert step.args == ("--suite", "quality", "--output", "/results/q.json")  # lists become tuples
    assert step.argv == [*CMD, "--suite", "quality", "--output", "/results/q.json"]
    assert step.uses_gpu
    assert step.resources.requests() == {"cpu": "500m", "memory": "4Gi", c.GPU_RESOURCE: "2"}
    assert step.resources.limits() == {"memory": "4Gi", c.GPU_RESOURCE: "2"}
    assert step.results.pod_path == "/results/nightly/q.json"
    assert step.results.on_shared_volume
    assert step.volume.read_only and step.volume.claim == c.MODEL_PVC


def test_step_is_immutable_even_its_env():
    step = make(env={"A": "1"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        step.env["B"] = "2"  # type: ignore[index]


def test_staging_volume_is_writable_and_reading_volume_is_not():
    assert ModelVolume.for_staging().read_only is False
    assert ModelVolume.for_reading().read_only is True


def test_cpu_only_step_asks_for_no_gpu():
    step = make()
    assert not step.uses_gpu
    assert c.GPU_RESOURCE not in step.resources.requests()
    assert c.GPU_RESOURCE not in step.resources.limits()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "Eval_Quality"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"name": "-eval"}, "name"),
        ({"command": ()}, "command"),
        ({"command": ("python", "")}, "command"),
        ({"args": ("--n", 3)}, "args"),
        ({"image": ""}, "image"),
        ({"image": "repo/img:1 --privileged"}, "image"),
        ({"env": {"1BAD": "x"}}, "env name"),
        ({"env": {"N": 3}}, "env N"),
        ({"env": {"OPENAI_API_KEY": "sk-live"}}, "credential"),
        ({"env": {"DB_PASSWORD": "hunter2"}}, "credential"),
        ({"env": {"AWS_SECRET_ACCESS_KEY": "x"}}, "credential"),
        ({"env": {"TOLLGATE_RESULTS": "/x"}}, "set by Tollgate"),
        (
            {"env": {"JUDGE": "x"}, "secret_env": (SecretEnv("JUDGE", "s", "k"),)},
            "both as plain env and from a Secret",
        ),
        ({"secret_env": (SecretEnv("A", "s", "k"), SecretEnv("A", "t", "k"))}, "twice"),
        ({"secret_env": ("OPENAI_API_KEY",)}, "SecretEnv"),
        ({"node_selector": {"bad key!": "x"}}, "node_selector"),
        ({"tolerations": ({"key": "x"},)}, "Toleration"),
        ({"results": ResultsLocation.on_volume("q.json")}, "mounts no volume"),
        ({"service_account": "Not_A_Name"}, "service_account"),
        ({"resources": {"cpu": "1"}}, "Resources"),
    ],
)
def test_bad_steps_are_refused_with_the_field_named(overrides, message):
    with pytest.raises(TollgateError, match=message) as info:
        make(**overrides)
    assert str(info.value).startswith("invalid pod step:")
    assert info.value.exit_code is None  # a definition error, not a step outcome


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: Resources(cpu="two"), "resources.cpu"),
        (lambda: Resources(memory="4GB"), "resources.memory"),
        (lambda: Resources(gpu=-1), "resources.gpu"),
        (lambda: Resources(gpu=True), "resources.gpu"),
        (lambda: Resources(gpu=0.5), "resources.gpu"),
        (lambda: Resources(cpu_limit="lots"), "cpu_limit"),
        (lambda: SecretEnv("OPENAI-KEY", "s", "k"), "secret_env name"),
        (lambda: SecretEnv("K", "Bad_Secret", "k"), "Secret name"),
        (lambda: SecretEnv("K", "s", "bad key"), "Secret key"),
        (lambda: Toleration(key="gpu", operator="In"), "operator"),
        (lambda: Toleration(key="gpu", operator="Exists", value="x"), "no value"),
        (lambda: Toleration(key="gpu", operator="Equal"), "needs a value"),
        (lambda: Toleration(key="gpu", effect="Sometimes"), "effect"),
        (lambda: ModelVolume(claim="Models"), "claim"),
        (lambda: ModelVolume(mount_path="models"), "mount_path"),
        (lambda: ModelVolume(mount_path="/"), "mount_path"),
        (lambda: ModelVolume(mount_path="/tmp"), "reserved"),
        (lambda: ModelVolume(mount_path="/results"), "reserved"),
        (lambda: ResultsLocation("results.json"), "results"),
        (lambda: ResultsLocation("/models/q.json"), "results"),
        (lambda: ResultsLocation("/results/../etc/passwd"), "results"),
        (lambda: ResultsLocation("/results/"), "results"),
        (lambda: ResultsLocation("s3://bucket"), "s3://bucket/key"),
    ],
)
def test_bad_parts_are_refused(factory, message):
    with pytest.raises(TollgateError, match=message):
        factory()


def test_s3_results_need_no_volume():
    step = make(results=ResultsLocation.s3("s3://tollgate/results/run-1/q.json"))
    assert not step.results.on_shared_volume
    assert step.results.pod_path == "s3://tollgate/results/run-1/q.json"


def test_templates_in_args_and_env_are_accepted_for_rendering_later():
    step = make(args=("--model", "{{ params.model_name }}:{{ params.model_version }}"),
                env={"TOLLGATE_ENDPOINT": "{{ ti.xcom_pull(task_ids='serve_model') }}"})
    assert "{{ params.model_name }}" in step.args[1]


def test_image_default_follows_the_environment(monkeypatch):
    monkeypatch.setenv(c.IMAGE_ENV, "registry.example/tollgate-evals:9")
    assert make().image == "registry.example/tollgate-evals:9"
    monkeypatch.delenv(c.IMAGE_ENV)
    assert make().image == c.DEFAULT_IMAGE


@given(st.text(min_size=1, max_size=70))
def test_any_accepted_name_is_a_dns_label(name):
    try:
        step = make(name=name)
    except TollgateError:
        return
    assert len(step.name) <= 63
    assert step.name == step.name.lower().strip("-")
    assert all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in step.name)


@given(st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True), st.text(max_size=10), max_size=5))
def test_plain_env_never_carries_credential_names(env):
    try:
        step = make(env=env)
    except TollgateError as exc:
        assert "invalid pod step" in str(exc)
        return
    for key in step.env:
        for word in ("SECRET", "PASSWORD", "TOKEN", "API_KEY", "ACCESS_KEY"):
            assert word not in key
