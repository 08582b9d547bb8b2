"""A CSV file opened past its header: what subscriber lists and suppression lists share.

The delimiter is the one the header line uses most (comma, semicolon or tab: Excel writes
semicolons in much of Europe); the header must name an `email` column, once.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import IO, TYPE_CHECKING

from newsletter.errors import SubscribersError
from newsletter.lists.encoding import check_text

if TYPE_CHECKING:
    from _csv import Reader


@dataclass
class Table:
    """A CSV file opened past its header: what subscriber and suppression lists share."""

    path: Path
    file: IO[str]
    reader: Reader
    columns: list[str]
    index: dict[str, int]  # lowercased column name -> position
    header_line: int  # the physical line the header ends on
    delimiter: str
    newline: str


def open_table(path: Path) -> Table | None:
    """Open a CSV file with an `email` column, or None if it has no header at all."""
    check_text(path)
    file = path.open(encoding="utf-8-sig", newline="")
    try:
        return _read_header(path, file)
    except BaseException:
        file.close()
        raise


def _read_header(path: Path, file: IO[str]) -> Table | None:
    head: list[str] = []
    for text in file:
        head.append(text)
        if text.strip():
            break
    else:
        file.close()
        return None
    delimiter = max(",;\t", key=head[-1].count)  # a tie goes to the comma
    reader = csv.reader(chain(head, file), dialect="excel", delimiter=delimiter, strict=True)
    try:
        header = next(row for row in reader if row)
    except csv.Error as e:
        raise SubscribersError(
            f"{path}:{len(head)}: the header line is not valid CSV ({e}). "
            "The first line names the columns, e.g. email,name,tags."
        ) from None
    columns = [c.strip() for c in header]
    index: dict[str, int] = {}
    for i, column in enumerate(columns):
        name = column.lower()
        if name in index:
            raise SubscribersError(
                f"{path}:{len(head)}: the column {column!r} appears twice in the header. "
                "Rename or remove one of them."
            )
        if name:
            index[name] = i
    if "email" not in index:
        found = ", ".join(repr(c) for c in columns)
        raise SubscribersError(
            f"{path}:{len(head)}: no `email` column; the header has {found} "
            f"(split at {delimiter!r}). Name the column of addresses `email`, and separate "
            "columns with commas, semicolons or tabs."
        )
    newline = "\r\n" if head[-1].endswith("\r\n") else "\n"
    return Table(path, file, reader, columns, index, reader.line_num, delimiter, newline)
