"""The tree's imports keep its layers apart: no import loop among the project's modules, and no private name
(``_name``) of one package used by another. Read statically with ``ast`` from ``backbones/``, ``heads/``,
``tasks/`` and ``tools/``; imports inside functions count as much as those at the top of a module.

A loop means two modules need each other, so one of them holds two concerns; a private name used across
packages is a helper that should be public (or live in shared code).

    PYTHONPATH=$PWD python tests/test_module_imports.py      # prints every loop and every private import
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("backbones", "heads", "tasks", "tools")


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """``{dotted module name: file}``; a package is named by its ``__init__.py``."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str, path: Path, modules: dict[str, Path]):
    """Yield ``(line, target module, imported names, local name)`` for every import of a project module in
    ``path``. A ``from X import y`` whose ``y`` is a module of the project targets ``X.y``; a module bound to a
    name of its own (``import X as m``, ``from X import y``) comes with no names and that local name. Imports
    under ``if TYPE_CHECKING:`` are left out: they name types for readers and checkers and never run."""
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = {
        id(n) for block in ast.walk(tree) if _is_type_checking(block) for stmt in block.body for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield node.lineno, alias.name, (), alias.asname
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module, path).split(".")
                anchor = ".".join(package[: len(package) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            names = []
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    yield node.lineno, f"{base}.{alias.name}", (), alias.asname or alias.name
                else:
                    names.append(alias.name)
            if names and base in modules:
                yield node.lineno, base, tuple(names), None


def _is_type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """``{module: {imported project module: line of its first import}}``."""
    modules = project_modules(root)
    graph = {m: {} for m in modules}
    for module, path in modules.items():
        for line, target, _, _ in _imports(module, path, modules):
            if target != module:
                graph[module].setdefault(target, line)
    return graph


def _shortest_cycle(graph: dict[str, dict[str, int]], start: str, within: set[str]) -> list[str]:
    """The shortest path ``start -> ... -> start`` through modules of ``within`` (breadth first)."""
    parents, frontier = {start: None}, [start]
    while True:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    path = [node]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return path[::-1] + [start]
                if nxt in within and nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following


def import_loops(root: Path = ROOT) -> list[str]:
    """One loop per set of modules that reach each other, as ``a (line) -> b (line) -> a``."""
    graph = import_graph(root)
    reach = {}
    for start in graph:  # the project has ~200 modules: a search from each is fast enough and plain
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reach[start] = seen
    loops, done = [], set()
    for start in sorted(graph):
        group = {m for m in reach[start] if start in reach[m]}
        if start in done or not (group - {start}):
            continue
        done |= group
        cycle = _shortest_cycle(graph, start, group)
        steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
        loops.append(" -> ".join(steps + [cycle[-1]]))
    return loops


def private_imports(root: Path = ROOT) -> list[str]:
    """``path:line: module._name`` for each private name taken from another package: a private module, a name
    imported from a module, or an attribute read from a module imported under a name."""
    modules = project_modules(root)
    found = []
    for module, path in modules.items():
        rel = path.relative_to(root).as_posix()
        here = _package_of(module, path)
        bound = {}  # local name -> module of another package
        for line, target, names, local in _imports(module, path, modules):
            if _package_of(target, modules[target]) != here:
                private = [f"{target}.{n}" for n in names if _is_private(n)]
                if _is_private(target.rpartition(".")[2]):
                    private.append(target)
                found += [f"{rel}:{line}: {name}" for name in private]
                bound.update({local: target} if local else {})
        for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
            if (
                isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in bound and _is_private(node.attr)
            ):
                found.append(f"{rel}:{node.lineno}: {bound[node.value.id]}.{node.attr}")
    return sorted(set(found))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_import_loop():
    loops = import_loops()
    assert loops == [], "import loops (one of each pair of modules holds two concerns: split it):\n" + "\n".join(loops)


def test_no_private_name_used_across_packages():
    found = private_imports()
    assert found == [], "private names used by another package (make them public):\n" + "\n".join(found)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_the_loop_finder_finds_loops_through_any_import(tmp_path):
    _write(tmp_path, {
        "backbones/__init__.py": "",
        "backbones/a.py": "from .b import x\n",
        "backbones/b.py": "def f():\n    from backbones import a\n",  # a function-level import closes the loop
        "heads/__init__.py": "from . import c\n",
        "heads/c.py": "import tasks.d\n",
        "tasks/__init__.py": "",
        "tasks/d.py": "import os\nfrom heads.c import y\n",
        "tasks/e.py": "from .d import z\nfrom backbones.a import w\n",  # reaches the loops, is in none
        "tasks/f.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .g import T\n",
        "tasks/g.py": "from .f import u\n",  # f imports g for type checkers only: no loop
        "tools/t.py": "from tasks import e\n",
    })
    assert import_loops(tmp_path) == [
        "backbones.a (line 1) -> backbones.b (line 2) -> backbones.a",
        "heads.c (line 1) -> tasks.d (line 2) -> heads.c",
    ]
    graph = import_graph(tmp_path)
    assert graph["tools.t"] == {"tasks.e": 1} and graph["tasks.f"] == {}


def test_the_private_name_finder_sees_names_and_attributes_across_packages(tmp_path):
    _write(tmp_path, {
        "tasks/__init__.py": "",
        "tasks/det/__init__.py": "from .model import _size\n",  # its own package: fine
        "tasks/det/model.py": "_size = 1\n__all__ = []\n",
        "tasks/det/_util.py": "",
        "tasks/pan/__init__.py": "",
        "tasks/pan/model.py": (
            "from tasks.det.model import _size, __all__\n"  # a dunder is not private
            "from ..det import model as det\n"
            "import tasks.det.model as m\n"
            "def f():\n    return det._size + det.public\n"
            "def g():\n    return m._size\n"
            "from tasks.det import _util\n"
        ),
        "backbones/__init__.py": "",
        "backbones/x.py": "import torch\nfrom torch import _C\n",  # other libraries are theirs to judge
    })
    assert private_imports(tmp_path) == [
        "tasks/pan/model.py:1: tasks.det.model._size",
        "tasks/pan/model.py:5: tasks.det.model._size",
        "tasks/pan/model.py:7: tasks.det.model._size",
        "tasks/pan/model.py:8: tasks.det._util",
    ]


if __name__ == "__main__":
    found_loops, found_private = import_loops(), private_imports()
    print("\n".join(found_loops + found_private))
    print(f"import loops: {len(found_loops)}, private names across packages: {len(found_private)}")
    sys.exit(1 if found_loops or found_private else 0)
