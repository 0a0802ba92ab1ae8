"""The package layout: no import cycle between modules, and the project's own modules are
imported at module level (only the CLI's sub-commands import lazily, to keep `--help` fast)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "coverid"
LAZY_OK = ("coverid.cli", "coverid.commands")


def module_name(path: Path) -> str:
    """src/coverid/a/b.py -> coverid.a.b (packages by their __init__)."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The project modules an import statement loads (a `from pkg import mod` names the module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("coverid")]
    if not node.module or not node.module.startswith("coverid"):
        return []
    subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
    return subs or [node.module]


def imports(path: Path) -> tuple[set[str], list[int]]:
    """(modules imported at module level, line numbers of coverid imports inside functions)."""
    tree = ast.parse(path.read_text())
    top, nested = set(), []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            top.update(targets(node))
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nested += [n.lineno for n in ast.walk(fn)
                       if isinstance(n, (ast.Import, ast.ImportFrom)) and targets(n)]
    return top, nested


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_modules():
    graph = {name: {t for t in imports(path)[0] if t in MODULES and t != name}
             for name, path in MODULES.items()}
    # a package's __init__ runs before its modules: importing coverid.x.y imports coverid.x
    for name in list(graph):
        parent = name.rsplit(".", 1)[0]
        if parent in MODULES and parent != name:
            graph[name].add(parent)
    assert find_cycle(graph) is None


def test_library_imports_project_modules_at_module_level():
    lazy = {name: lines for name, path in MODULES.items()
            if not name.startswith(LAZY_OK) and (lines := imports(path)[1])}
    assert lazy == {}


def test_every_module_imports():
    for name in sorted(MODULES):
        importlib.import_module(name)


def test_old_embedder_path_still_loads_models():
    """Registered pyfunc models pickled `coverid.embedder.load_embedder` by reference."""
    from coverid import embedder as shim
    from coverid.model import embedder

    assert shim.load_embedder is embedder.load_embedder
