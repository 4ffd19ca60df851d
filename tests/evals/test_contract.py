"""evals.contract: the suites, exit codes, model name/version pattern and run-folder layout both sides use."""

from __future__ import annotations

import pytest

from evals import contract, errors
from evals.results import parse_model_ref


def test_suites_and_exit_codes() -> None:
    assert contract.SUITES == ("quality", "safety", "latency")
    assert set(contract.EVAL_SUITES) < set(contract.SUITES) and "latency" not in contract.EVAL_SUITES
    assert (contract.EXIT_PASS, contract.EXIT_FAIL, contract.EXIT_BAD_INPUT) == (0, 1, 2)
    assert (errors.CheckFailed.exit_code, errors.BadInput.exit_code) == (contract.EXIT_FAIL, contract.EXIT_BAD_INPUT)


@pytest.mark.parametrize("name", ["smollm2-orders", "orders", "m", "a.b_c-1", "9" * 63])
def test_model_names_users_type(name: str) -> None:
    assert contract.is_model_name(name)
    contract.validate_model_ref(name, "12")


@pytest.mark.parametrize("name", ["", "Orders", "-x", ".x", "a/b", "../x", "has space", "orders; rm -rf /", "a:b",
                                  "a" * 64, "orders\n", None, 3])
def test_model_names_refused(name) -> None:
    assert not contract.is_model_name(name)
    with pytest.raises(contract.InvalidModelRef, match="model name"):
        contract.validate_model_ref(name)


@pytest.mark.parametrize("version", ["", "v1", "1.0", "-1", "1 ", "2 && true", "1" * 10, "1\n", 1])
def test_model_versions_refused(version) -> None:
    assert not contract.is_model_version(version)
    with pytest.raises(contract.InvalidModelRef, match="model version"):
        contract.validate_model_ref("orders", version)


def test_an_invalid_ref_is_bad_input_under_the_one_root() -> None:
    assert issubclass(contract.InvalidModelRef, errors.BadInput)
    assert issubclass(contract.InvalidModelRef, errors.TollgateError)
    assert contract.InvalidModelRef("x").exit_code == contract.EXIT_BAD_INPUT


def test_model_ref_round_trips_through_the_cli_parser() -> None:
    ref = contract.model_ref("smollm2-orders", "2")
    assert ref == "smollm2-orders:2" and parse_model_ref(ref) == ("smollm2-orders", "2")
    for bad in ("Orders:1", "orders:v1", "orders", "orders:", ":1", "orders:1:2"):
        with pytest.raises(errors.BadInput, match="NAME:VERSION"):
            parse_model_ref(bad)


def test_run_folder_layout() -> None:
    folder = contract.RunFolder("/results/model_promotion/manual__1/m-2/")
    assert folder.results("quality") == "/results/model_promotion/manual__1/m-2/quality.json"
    assert folder.verdict("safety") == "/results/model_promotion/manual__1/m-2/safety.verdict.json"
    assert folder.report("latency") == "/results/model_promotion/manual__1/m-2/latency.report.md"
    assert folder.baseline("quality") == "/results/model_promotion/manual__1/m-2/baseline/quality.json"
    assert folder.prompts == "/results/model_promotion/manual__1/m-2/prompts/quality.yaml"
    assert folder.canary == "/results/model_promotion/manual__1/m-2/canary.json"
    # An Airflow template as the root stays a template.
    assert contract.RunFolder("{{ run_folder() }}").results("quality") == "{{ run_folder() }}/quality.json"


def test_the_contract_imports_nothing_from_outside_the_standard_library() -> None:
    import ast
    import sys
    from pathlib import Path

    tree = ast.parse(Path(contract.__file__).read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in modules if m.split(".")[0] not in sys.stdlib_module_names} <= {"evals.errors"}
