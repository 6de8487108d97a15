"""Files in ``rexthinker_rl/`` of at most 500 lines and functions of at most 60 (the house style's bounds: a module
does one thing, a function fits on a screen). The test lists every offender, so a split can be planned at once."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "rexthinker_rl"
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60


def long_files(root: Path = PACKAGE, limit: int = MAX_FILE_LINES) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            found.append(f"{path.relative_to(root.parent)}: {lines} lines")
    return found


def long_functions(root: Path = PACKAGE, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions and methods (nested ones counted on their own too) longer than ``limit`` lines, decorators and
    docstring included."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = node.end_lineno - first + 1
                if length > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_file_over_500_lines():
    offenders = long_files()
    assert not offenders, "split by responsibility:\n" + "\n".join(offenders)


def test_no_function_over_60_lines():
    offenders = long_functions()
    assert not offenders, "split by responsibility:\n" + "\n".join(offenders)


def test_offenders_are_found(tmp_path):
    """The checker's control: a 501-line file and a 61-line function (decorator included) are listed, the bounds not."""
    package = tmp_path / "rexthinker_rl"
    package.mkdir()
    (package / "ok.py").write_text("x = 1\n" * 500)
    (package / "long.py").write_text("x = 1\n" * 501)
    body = "".join(f"    y = {i}\n" for i in range(58))
    functions = f"@staticmethod\ndef long():\n{body}    y = 58\n\n\ndef fits():\n{body}    return y\n"
    (package / "functions.py").write_text(functions)
    assert long_files(package) == ["rexthinker_rl/long.py: 501 lines"]
    assert long_functions(package) == ["rexthinker_rl/functions.py:2 long: 61 lines"]
