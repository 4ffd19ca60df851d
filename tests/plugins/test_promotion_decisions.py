"""The pure parts of promotion: how an approval answer reads, what a run folder is called."""

from __future__ import annotations

import pytest

from tollgate import promotion as p
from tollgate.exceptions import GateFailed


@pytest.mark.parametrize(
    ("xcom", "expected"),
    [
        (None, ("no_response", "nobody")),
        ({"chosen_options": ["Approve"], "responded_by_user": {"id": "ann", "name": "Ann"}}, ("approved", "Ann")),
        ({"chosen_options": ["Reject"], "responded_by_user": {"id": "bob", "name": ""}}, ("rejected", "bob")),
        # response_timeout with defaults=Reject: an option but nobody answered
        ({"chosen_options": ["Reject"], "responded_by_user": None}, ("timed_out", "nobody")),
        ({"error_type": "timeout", "chosen_options": None, "responded_by_user": None}, ("timed_out", "nobody")),
    ],
)
def test_approval_outcome(xcom, expected) -> None:
    assert p.approval_outcome(xcom) == expected


def test_require_gates_passed_names_the_failed_gates() -> None:
    p.require_gates_passed({"failed_gates": []})
    with pytest.raises(GateFailed, match="quality/regression, latency/p95"):
        p.require_gates_passed({"failed_gates": ["quality/regression", "latency/p95"]})
    with pytest.raises(GateFailed, match="no evidence"):
        p.require_gates_passed(None)


def test_run_folder_is_filesystem_safe_and_stable() -> None:
    folder = p.run_folder("model_promotion", "manual__2026-11-25T09:06:29.297510+00:00", "m", "2")
    assert folder == "model_promotion/manual__2026-11-25T09_06_29.297510_00_00/m-2"
    hostile = p.run_folder("d", "a/../../b", "m", "1")
    assert hostile.split("/")[1] == "a_.._.._b" and ".." not in hostile.split("/")


def test_local_results_dir_refuses_escapes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TOLLGATE_HOME", str(tmp_path))
    assert p.local_results_dir("x/y").is_relative_to(tmp_path)
    with pytest.raises(Exception, match="escapes"):
        p.local_results_dir("../../etc")
