"""CSV cells that a spreadsheet shows as text: every CSV file the tool writes goes through here.

Lists come from outside. A cell such as `=cmd|' /C calc'!A0` written back as it came into
suppressions.csv or build/*-skipped.csv is run as a formula by Excel or LibreOffice when
the editor opens the file. OWASP's rule: a cell that starts with `=`, `+`, `-`, `@`, a tab
or a carriage return gets a leading `'`, which spreadsheets read as "this is text".

Addresses may start with `=`, `+` or `-` (RFC 5322 allows them before the @), and the tool
reads suppressions.csv back, so the mark must come off exactly: a cell that already starts
with quotes before such a character gets one more, and `restore` takes one off.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import IO, Any, Final

__all__ = ["CellWriter", "neutralise", "restore"]

_FORMULA: Final = re.compile("'*[=+\\-@\t\r]")


def neutralise(value: object) -> str:
    """The cell as text a spreadsheet will not evaluate; `restore` gives it back."""
    text = str(value)
    return "'" + text if _FORMULA.match(text) else text


def restore(cell: str) -> str:
    """A cell as `neutralise` wrote it, back as it was (other cells are left as they are)."""
    return cell[1:] if cell.startswith("'") and _FORMULA.match(cell, 1) else cell


class CellWriter:
    """`csv.writer` whose every cell is neutralised: the one way the tool writes CSV."""

    def __init__(self, file: IO[str], **options: Any) -> None:
        self._writer = csv.writer(file, **options)

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow([neutralise(cell) for cell in row])
