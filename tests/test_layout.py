"""The package tree is the architecture: each package imports only what its docstring allows, the
import graph has no circles, and nothing outside the commands reaches into them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "vfx_tasks"

#: What each part may import from vfx_tasks besides itself (see each package's docstring and
#: docs/layout.md). Data flows one way: source -> queue -> extract -> models; nothing imports cli.
ALLOWED = {
    "errors": set(),
    "settings": {"errors"},
    "storage": {"errors"},
    "redaction": set(),
    "models": {"errors"},
    "extract": {"errors", "settings", "models"},
    "sources": {"errors", "extract", "storage"},
    "queue": {"errors", "settings", "storage", "redaction", "models", "extract", "sources", "outputs"},
    "outputs": {"errors", "storage", "models", "extract", ""},
    # cli may import everything, the package root included (for __version__).
    "cli": {"", "errors", "settings", "storage", "redaction", "models", "extract", "sources", "queue",
            "outputs"},
    "celery": {"queue", "settings"},
}
#: A module named in a string, as ``python -m <module>`` or ``importlib.import_module`` take it.
_MODULE_IN_TEXT = re.compile(r"\bvfx_tasks(?:\.\w+)+")


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its __init__)."""
    found = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported_names(path: Path) -> set[str]:
    """Dotted names a module imports anywhere in it (top level, functions, TYPE_CHECKING blocks)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name == "vfx_tasks" or name.startswith("vfx_tasks.")}


def _imported_parts(path: Path) -> set[str]:
    """The top-level parts of vfx_tasks (``queue``, ``errors``; ``""`` for the package) a module imports."""
    modules = _modules()
    return {name.split(".")[1] if "." in name else "" for name in _imported_names(path) if name in modules}


def import_graph() -> dict[str, set[str]]:
    """``module -> modules it imports`` (explicit imports only: a package's ``__init__`` that Python
    runs before a submodule is not an edge)."""
    modules = _modules()
    return {
        name: {m for m in _imported_names(path) if m in modules} - {name} for name, path in modules.items()
    }


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph (``[a, b, ..., a]``), or ``None``."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (circle := visit(target)) is not None:
                return circle
        stack.pop()
        state[node] = "closed"
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node)) is not None:
            return circle
    return None


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_it_may(part: str) -> None:
    modules = sorted((PACKAGE_DIR / part).rglob("*.py")) if (PACKAGE_DIR / part).is_dir() else [
        PACKAGE_DIR / f"{part}.py"
    ]
    assert modules, f"no modules found for {part}"
    for module in modules:
        forbidden = _imported_parts(module) - ALLOWED[part] - {part}
        assert not forbidden, f"{module.relative_to(PACKAGE_DIR.parent)} imports vfx_tasks.{forbidden}"


def test_the_import_graph_has_no_circles() -> None:
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_circle_finder_finds_one() -> None:
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def _strings(path: Path) -> list[str]:
    """The string literals of a module that are values (docstrings left out: they may name anything)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    return [
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_nothing_outside_cli_names_a_command_module_even_in_a_string() -> None:
    # ``[sys.executable, "-m", "vfx_tasks.cli.worker"]`` is an import of the command by another name.
    for path in PACKAGE_DIR.rglob("*.py"):
        if path.is_relative_to(PACKAGE_DIR / "cli"):
            continue
        named = {m for text in _strings(path) for m in _MODULE_IN_TEXT.findall(text)}
        named = {m for m in named if m.startswith("vfx_tasks.cli")}
        assert not named, f"{path.relative_to(PACKAGE_DIR.parent)} names {named}"


def test_every_module_is_in_a_known_part() -> None:
    parts = {path.name.removesuffix(".py") for path in PACKAGE_DIR.iterdir() if path.name != "__pycache__"}
    assert parts - {"__init__"} == set(ALLOWED)
