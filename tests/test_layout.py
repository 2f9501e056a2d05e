"""The house: one subpackage per concern, imports pointing down only, no import cycles.

Layers, bottom to top: the leaves at the package root (``config``, ``errors``, ``render``,
``digest``, ``progress``), ``store``, ``materials``, ``compute``, ``analysis``, ``sharing``,
``api``, ``cli``. Every import (function-level ones included; ``if TYPE_CHECKING:`` blocks excluded)
goes to the same layer or one below, and no chain of imports comes back to where it started.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mliapdb

PACKAGE = Path(mliapdb.__file__).parent
LAYERS = ["config", "errors", "render", "digest", "progress", "store", "materials", "compute",
          "analysis", "sharing", "api", "cli", "__main__"]
RANK = {name: (0 if i < 5 else i - 4) for i, name in enumerate(LAYERS)}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The mliapdb modules ``path`` imports (``from a import b`` counts ``a.b`` when that is a
    module, else ``a``)."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                out.update(a.name for a in child.names if a.name.startswith("mliapdb"))
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0 \
                    and child.module.startswith("mliapdb"):
                for alias in child.names:
                    sub = f"{child.module}.{alias.name}"
                    out.add(sub if sub in modules else child.module)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in out if m in modules}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mliapdb"


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_every_module_is_in_a_layer():
    unplaced = sorted(m for m in _graph() if m != "mliapdb" and _layer(m) not in RANK)
    assert unplaced == []


def test_imports_point_down():
    graph = _graph()
    upward = sorted(
        f"{src} -> {dst}" for src, dsts in graph.items() if src != "mliapdb"
        for dst in dsts if dst != "mliapdb" and RANK[_layer(dst)] > RANK[_layer(src)]
    )
    assert upward == []


def test_the_root_package_imports_nothing_at_import_time():
    """``import mliapdb`` is cheap: the API is reached through a lazy ``__getattr__``."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    assert [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)
            and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")] == []


def test_no_import_cycles():
    graph = {k: v - {"mliapdb"} for k, v in _graph().items() if k != "mliapdb"}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    assert cycles == []
