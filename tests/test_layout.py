"""The package's rooms keep their doors: library code never imports the printing module,
and only storage/ opens the ledger."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from newsletter.storage.ledger import Ledger
from newsletter.storage.store import LedgerStore

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


def test_only_storage_opens_the_ledger() -> None:
    """The ledger is opened through the store (`open_store`, `existing_ledger`), and the send's
    worker threads get their connection from it (`for_threads`), so another backend is a new
    module in storage/, not edits across the package."""
    offenders = sorted(
        rel
        for path in PACKAGE.rglob("*.py")
        if not (rel := path.relative_to(PACKAGE).as_posix()).startswith("storage/")
        and built(path, "Ledger")
    )
    assert offenders == []


def test_only_storage_names_the_sqlite_ledger() -> None:
    """Outside storage/ a ledger is a `LedgerStore`: no module imports SQLite's class, even
    for an annotation (value types such as `Manifest` may still come from its module)."""
    offenders = sorted(
        rel
        for path in PACKAGE.rglob("*.py")
        if not (rel := path.relative_to(PACKAGE).as_posix()).startswith("storage/")
        and "newsletter.storage.ledger.Ledger" in imported(path)
    )
    assert offenders == []


def test_the_sqlite_ledger_has_every_method_of_the_protocol() -> None:
    """mypy checks the signatures (`storage/sqlite.py`); this says the same for a run without
    it: every member of `LedgerStore` is on SQLite's ledger, taking the same parameters."""
    wanted = {
        name: member
        for name, member in vars(LedgerStore).items()
        if callable(member) and (not name.startswith("_") or name in {"__enter__", "__exit__"})
    }
    assert {"close", "__enter__", "__exit__", "for_threads", "begin_batch"} <= set(wanted)
    for name, member in wanted.items():
        assert list(inspect.signature(getattr(Ledger, name)).parameters) == list(
            inspect.signature(member).parameters
        ), name
    assert "path" in LedgerStore.__annotations__


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
