"""The package's import graph, read from the source (``ast``, nothing imported): no cycles.

Modules are the files of ``rexthinker_rl/``, ``rewards/`` and ``data_tools/``. An edge ``a -> b`` is an import of ``b``
(or of a name from ``b``) in ``a``; ``from package import module`` is an edge to that module. Imports under
``if TYPE_CHECKING:`` never run, but they say that ``a`` needs ``b``'s types: a cycle through one is the same tangle
a reader must hold in mind, so they count as module-level imports. Module-level imports (including those in
class bodies and top-level ``if``/``try`` blocks, which run at import time) must form no cycle. Function-level imports
run later, so Python tolerates a cycle through them, but a lazy import used to dodge a cycle hides the same tangle:
the graph with them added must be acyclic too. Those left are imports of heavy or optional packages (vLLM, DeepSpeed,
gradio, ...) and of the heavy parts of this package that command-line start-up must not pay for.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rexthinker_rl", "rewards", "data_tools")


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def _imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it runs at module import time (not inside a function)."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, at_import: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, at_import))
            inner = at_import and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, inner)

    visit(tree, True)
    return found


def _targets(statement: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Our modules an import statement loads."""
    if isinstance(statement, ast.Import):
        names = [alias.name for alias in statement.names]
    else:
        base = statement.module or ""
        if statement.level:  # relative: from the module's package upwards
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - statement.level + 1]
            base = ".".join([*package, base] if base else package)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in statement.names]
    return {name for name in names if name in known}


def import_graph(function_level: bool) -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for statement, at_import in _imports(tree):
            if at_import or function_level:
                graph[name] |= _targets(statement, name, path.name == "__init__.py", known) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_covers_the_packages():
    graph = import_graph(function_level=False)
    assert {"rexthinker_rl.train.trainer", "rexthinker_rl.runtime.colocated", "rewards.composite"} <= set(graph)
    assert "rexthinker_rl.runtime.ranks" in graph["rexthinker_rl.runtime.colocated"]
    assert "rexthinker_rl.rollout.base" in graph["rexthinker_rl.rollout"]


def test_no_import_cycle_at_module_level():
    cycle = find_cycle(import_graph(function_level=False))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_hidden_by_a_function_level_import():
    cycle = find_cycle(import_graph(function_level=True))
    assert cycle is None, "import cycle through a function-level import: " + " -> ".join(cycle)


def test_type_checking_imports_are_edges():
    """The checker's control for ``if TYPE_CHECKING:``: its imports are module-level edges."""
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import Thing\n"
    statements = _imports(ast.parse(source))
    assert [(type(node).__name__, node.module, at_import) for node, at_import in statements][1:] == [
        ("ImportFrom", "pkg.b", True)
    ]


def test_cycles_are_found():
    """The checker's control: a two-module cycle and a longer one are reported, a diamond is not."""
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None


def test_the_tree_is_the_architecture_map():
    """At most 15 entries directly under rexthinker_rl/ (the subpackages by concern, and the few modules every layer
    shares), and every package's __init__ says in its docstring what it owns."""
    package = ROOT / "rexthinker_rl"
    entries = sorted(p.name for p in package.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 15, f"{len(entries)} entries under rexthinker_rl/: {entries}"
    for init in sorted(package.rglob("__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring and len(docstring) > 40, f"{init.relative_to(ROOT)} does not say what it owns"
