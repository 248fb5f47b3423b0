"""The package tree is the architecture: each package imports only what its docstring allows."""

from __future__ import annotations

import ast
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
    "sources": {"errors", "extract"},
    "queue": {"errors", "settings", "storage", "redaction", "models", "extract", "sources", "outputs"},
    "outputs": {"errors", "storage", "models", "extract", ""},
    # cli may import everything, the package root included (for __version__).
    "cli": {"", "errors", "settings", "storage", "redaction", "models", "extract", "sources", "queue",
            "outputs"},
    "celery": {"queue"},
}


def _imported_parts(path: Path) -> set[str]:
    """The top-level parts of vfx_tasks (``queue``, ``errors``; ``""`` for the package) a module imports."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name == "vfx_tasks" or name.startswith("vfx_tasks."):
                parts.add(name.split(".")[1] if "." in name else "")
    return parts


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_it_may(part: str) -> None:
    modules = sorted((PACKAGE_DIR / part).rglob("*.py")) if (PACKAGE_DIR / part).is_dir() else [
        PACKAGE_DIR / f"{part}.py"
    ]
    assert modules, f"no modules found for {part}"
    for module in modules:
        forbidden = _imported_parts(module) - ALLOWED[part] - {part}
        assert not forbidden, f"{module.relative_to(PACKAGE_DIR.parent)} imports vfx_tasks.{forbidden}"


def test_every_module_is_in_a_known_part() -> None:
    parts = {path.name.removesuffix(".py") for path in PACKAGE_DIR.iterdir() if path.name != "__pycache__"}
    assert parts - {"__init__"} == set(ALLOWED)
