"""The shared code names no task and never reaches up (issue 17): in ``tasks/common/*.py``, ``tasks/*.py`` and
``tools/*.py``, no string literal (docstrings and comments excluded; f-string parts included) is a registered
task's name or holds it as a word, and no import runs from ``tasks/common`` into a task package or ``heads``.

    PYTHONPATH=$PWD python tests/test_shared_code.py      # prints every hit and the two counts
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("tasks/common/*.py", "tasks/*.py", "tools/*.py")


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, nodes) and node.body and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _reaches_up(module: str) -> bool:
    """An import target outside tasks/common, seen from a module in tasks/common."""
    if module.startswith(".."):
        return True
    if module == "tasks" or module.startswith("heads"):
        return True
    return module.startswith("tasks.") and not module.startswith("tasks.common")


def count(task_names, root: Path = ROOT) -> tuple[list[str], list[str]]:
    """``(task-name literals, imports up)``, one ``path:line: text`` entry each."""
    word = re.compile(r"\b(" + "|".join(map(re.escape, sorted(task_names))) + r")\b")
    literals, imports = [], []
    for pattern in SHARED:
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root).as_posix()
            tree = ast.parse(path.read_text(), filename=rel)
            docs = _docstrings(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                    if word.search(node.value):
                        literals.append(f"{rel}:{node.lineno}: {node.value!r}")
                if rel.startswith("tasks/common/") and isinstance(node, (ast.Import, ast.ImportFrom)):
                    if isinstance(node, ast.Import):
                        targets = [a.name for a in node.names]
                    else:
                        targets = ["." * node.level + (node.module or "")]
                    imports += [f"{rel}:{node.lineno}: import {t}" for t in targets if _reaches_up(t)]
    return literals, imports


def test_shared_code_names_no_task_and_never_reaches_up():
    from tasks import list_tasks

    literals, imports = count(list_tasks())
    assert literals == [], "task names in shared code:\n" + "\n".join(literals)
    assert imports == [], "imports from tasks/common up into a task or heads:\n" + "\n".join(imports)


def test_the_counter_finds_what_it_looks_for(tmp_path):
    (tmp_path / "tasks" / "common").mkdir(parents=True)
    (tmp_path / "tools").mkdir()
    (tmp_path / "tasks" / "common" / "x.py").write_text(
        '"""Docstrings may say depth."""\nimport heads.a\nfrom ..depth import y\nfrom .registry import z\n'
        'A = {"depth": 1}\nB = f"for depth models, not {A}"\nC = "depth_loss"  # not the word\n'
    )
    (tmp_path / "tools" / "t.py").write_text('def f():\n    """depth"""\n    return "depth"\n')
    literals, imports = count(["depth"], tmp_path)
    assert [entry.split(": ")[0] for entry in literals] == ["tasks/common/x.py:5", "tasks/common/x.py:6", "tools/t.py:3"]
    assert [entry.split(": ")[1] for entry in imports] == ["import heads.a", "import ..depth"]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from tasks import list_tasks

    found_literals, found_imports = count(list_tasks())
    print("\n".join(found_literals + found_imports))
    print(f"task-name literals: {len(found_literals)}, imports up: {len(found_imports)}")
    sys.exit(1 if found_literals or found_imports else 0)
