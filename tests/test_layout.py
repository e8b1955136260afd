"""The package's shape: imports point down from the CLI, and no function grows past 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import bulk_sender

PACKAGE = Path(bulk_sender.__file__).parent
#: The entry points: only the package root, the CLI (and ``python -m``) may import them.
TOP = {"bulk_sender.api", "bulk_sender.cli", "bulk_sender.runner", "bulk_sender.ui"}
ALLOWED = {
    "bulk_sender": {"bulk_sender.api"},
    "bulk_sender.__main__": {"bulk_sender.cli"},
    "bulk_sender.cli": {"bulk_sender.api", "bulk_sender.runner", "bulk_sender.ui"},
    "bulk_sender.api": {"bulk_sender.runner", "bulk_sender.ui"},
}
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, ast.Module]:
    trees = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        trees[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return trees


def _imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_nothing_below_the_cli_imports_the_entry_points() -> None:
    """input/, sending/, record/ and the shared modules never import the API, CLI, runner or UI."""
    wrong = {
        name: sorted((_imports(tree) & TOP) - ALLOWED.get(name, set()))
        for name, tree in _modules().items()
    }
    assert {name: found for name, found in wrong.items() if found} == {}


def test_no_function_is_longer_than_60_lines() -> None:
    """Every function and method of the package, from ``def`` to its last line, fits 60 lines."""
    long = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []
