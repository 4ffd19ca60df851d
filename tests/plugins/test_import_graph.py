"""plugins/tollgate and evals/ have no import cycle.

Module-level imports (``if TYPE_CHECKING:`` excluded) must form a DAG, and so must all
imports, the ones inside functions too: a cycle hidden in a function-level import
(registry -> audit -> registry, once) is still two modules that cannot be understood,
or moved, one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.fixtures.airflow import PLUGINS, REPO_ROOT

PACKAGE = PLUGINS / "tollgate"
EVALS = REPO_ROOT / "evals"


def module_name(path: Path, root: Path = PLUGINS) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level(body: list[ast.stmt]):
    """Statements that run at import: the module body, into if/try/with blocks, minus TYPE_CHECKING."""
    for node in body:
        if isinstance(node, ast.If):
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                    isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
                yield from _top_level(node.orelse)
                continue
            yield from _top_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _top_level(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])
        elif isinstance(node, ast.With):
            yield from _top_level(node.body)
        else:
            yield node


def import_graph(*, inside_functions: bool = False, package_dir: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports at import time (or anywhere, ``inside_functions``)."""
    root = package_dir.parent
    files = {module_name(p, root): p for p in package_dir.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        tree = ast.parse(path.read_text())
        for node in (ast.walk(tree) if inside_functions else _top_level(tree.body)):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for a in node.names:  # `from pkg import mod` imports the module pkg.mod
                    targets.add(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_import_cycle_in_plugins() -> None:
    graph = import_graph()
    assert "tollgate.mlflow.registry" in graph and graph["tollgate.mlflow.registry"] >= {
        "tollgate.mlflow.audit", "tollgate.mlflow.tracking"}
    assert cycles(graph) == []
    assert cycles(import_graph(inside_functions=True)) == []


def test_no_import_cycle_in_evals() -> None:
    graph = import_graph(package_dir=EVALS)
    assert graph["evals.weights.stage"] >= {"evals.weights.transfer", "evals.weights.fs"}
    assert cycles(graph) == []
    assert cycles(import_graph(inside_functions=True, package_dir=EVALS)) == []


def test_the_mlflow_layer_imports_one_way() -> None:
    """registry -> audit -> tracking; nothing below imports what is above it, not even lazily."""
    graph = import_graph(inside_functions=True)
    assert graph["tollgate.mlflow.tracking"] == set()
    assert graph["tollgate.mlflow.audit"] == {"tollgate.mlflow.tracking"}
    assert "tollgate.mlflow.registry" not in graph["tollgate.mlflow.audit"]


def test_the_detector_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
