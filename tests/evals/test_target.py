"""evals.suites.target: which API key the model client and the judge client send."""

from __future__ import annotations

import pytest

from evals.contract import JUDGE_API_KEY_ENV
from evals.suites import target

KEYS = ("TOLLGATE_JUDGE_API_KEY", "TOLLGATE_API_KEY", "OPENAI_API_KEY")


@pytest.fixture()
def no_keys(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in KEYS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_the_judge_reads_the_variable_the_eval_pods_get(no_keys: pytest.MonkeyPatch) -> None:
    # tollgate.pipeline mounts the judge's Secret under this name in every eval pod.
    assert JUDGE_API_KEY_ENV == "TOLLGATE_JUDGE_API_KEY"
    no_keys.setenv("OPENAI_API_KEY", "model-key")
    no_keys.setenv("TOLLGATE_JUDGE_API_KEY", "judge-key")
    assert target.judge_api_key() == "judge-key"
    assert target.api_key() == "model-key"  # the model under test keeps its own key


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "EMPTY"),
    ({"OPENAI_API_KEY": "o"}, "EMPTY"),
    ({"TOLLGATE_API_KEY": "t", "OPENAI_API_KEY": "o"}, "EMPTY"),
    ({"TOLLGATE_JUDGE_API_KEY": "", "TOLLGATE_API_KEY": "t"}, "EMPTY"),
])
def test_the_judge_never_gets_the_model_key(no_keys: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    for var, value in env.items():
        no_keys.setenv(var, value)
    assert target.judge_api_key() == expected


def test_the_judge_client_sends_the_judge_key(no_keys: pytest.MonkeyPatch) -> None:
    from evals.suites.judge import Judge, JudgeConfig

    no_keys.setenv("OPENAI_API_KEY", "model-key")
    no_keys.setenv("TOLLGATE_JUDGE_API_KEY", "judge-key")
    made = []
    real = target.make_client

    def recording(*args, **kwargs):
        client = real(*args, **kwargs)
        made.append(client)
        return client

    no_keys.setattr(target, "make_client", recording)
    Judge(JudgeConfig(endpoint="http://127.0.0.1:9/v1", model="judge:1"))  # no request is sent here
    assert [c.api_key for c in made] == ["judge-key"]
    assert real("http://127.0.0.1:9/v1", 5.0, 0).api_key == "model-key"  # the model's client is unchanged
