"""The data path reads in one direction: no module of llm_sync imports,
directly or through others, a module that imports it back (type-only
imports included: a cycle there is a layering mistake all the same)."""

from __future__ import annotations

import ast
from pathlib import Path

import llm_sync

PACKAGE = Path(llm_sync.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        if not is_package:
            parts = parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    names = [base]
    names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = _resolve(name, path.name == "__init__.py", node)
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]], skip_packages: bool = True) -> list[str]:
    """A cycle among modules (package ``__init__`` re-exports excluded:
    importing a package runs its ``__init__``, which only gathers names)."""
    packages = {n for n in graph if (PACKAGE.parent / n.replace(".", "/") / "__init__.py").exists()}
    edges = {n: {t for t in ts if not (skip_packages and t in packages)} for n, ts in graph.items()
             if not (skip_packages and n in packages)}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_import_cycles_in_llm_sync():
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_checker_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph, skip_packages=False) == ["a", "b", "c", "a"]


def test_lower_layers_never_import_higher_ones():
    graph = import_graph()
    for low in ("llm_sync.providers.base", "llm_sync.transport", "llm_sync.errors", "llm_sync.ratelimit.bucket"):
        reach = _reachable(graph, low)
        for high in ("llm_sync.pool", "llm_sync.pipeline", "llm_sync.client", "llm_sync.manager"):
            assert high not in reach, f"{low} reaches {high}"


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for target in graph.get(node, ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen
