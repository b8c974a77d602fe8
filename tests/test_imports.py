"""No import cycle among the modules of tasks/ (module-level and deferred imports alike; only
``if TYPE_CHECKING:`` blocks are left out, since they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

from tasks.tracking.fingerprint import PACKAGE_ROOT


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, known: set[str]) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name in known}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}
    graph = {name: imported(ast.parse(path.read_text()), set(files)) - {name}
             for name, path in files.items()}
    # importing a.b.c runs a/__init__ and a/b/__init__ first
    for name in graph:
        graph[name] |= {parent for dep in list(graph[name]) for parent in parents(dep)
                        if parent in graph and parent != name and not name.startswith(parent)}
    return graph


def parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_tasks():
    assert find_cycle(import_graph()) is None


def test_the_checker_finds_a_planted_cycle():
    graph = import_graph()
    graph["tasks.config"] = graph["tasks.config"] | {"tasks.models"}
    assert find_cycle(graph) is not None
