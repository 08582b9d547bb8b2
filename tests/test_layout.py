"""The package's rooms keep their doors: library code never imports the printing module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "newsletter"
#: The editor's door and what it prints with: the only modules that may import `console`.
PRINTERS = {"cli.py", "console.py"}


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth (a function's own import counts too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_library_module_imports_the_console() -> None:
    offenders = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).as_posix() not in PRINTERS
        and "newsletter.console" in imported(path)
    )
    assert offenders == []
