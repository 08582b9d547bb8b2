"""The package's rooms keep their doors: library code never imports the printing module,
and only storage/ opens the ledger."""

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


def built(path: Path, name: str) -> bool:
    """Whether the file calls `name(...)` (or `module.name(...)`) anywhere."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Name) and func.id == name) or (
                isinstance(func, ast.Attribute) and func.attr == name
            ):
                return True
    return False


#: The send's worker threads mark messages through a second connection to the ledger the
#: store opened (`Ledger(ledger.path, threads=True)`): a connection, not a second opening.
SECOND_CONNECTION = {"delivery/batches.py"}


def test_only_storage_opens_the_ledger() -> None:
    """The ledger is opened through the store (`open_store`, `existing_ledger`), so another
    backend is a new module in storage/, not edits across the package."""
    offenders = sorted(
        rel
        for path in PACKAGE.rglob("*.py")
        if not (rel := path.relative_to(PACKAGE).as_posix()).startswith("storage/")
        and rel not in SECOND_CONNECTION
        and built(path, "Ledger")
    )
    assert offenders == []


def test_a_module_over_400_lines_says_why_at_its_top() -> None:
    """Modules stay small; one that does not says why in its docstring ("Over 400 lines: ...")."""
    silent = sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if len(path.read_text(encoding="utf-8").splitlines()) > 400
        and "400 lines"
        not in (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "")
    )
    assert silent == []
