"""suppressions.csv: read into the "seen" database, and appended to durably.

The file is what keeps mail from people who asked for none, so an append is flushed and
fsynced (the directory too, for a new file), and a line that is not valid CSV stops the
read rather than letting an address on the list be missed.
"""

from __future__ import annotations

import csv
import os
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from newsletter.errors import SubscribersError
from newsletter.lists.addresses import address_key, validate_address
from newsletter.lists.cells import CellWriter, restore
from newsletter.lists.seen import CLAIM, SUPPRESSED, digest, scratch_db
from newsletter.lists.table import Table, open_table


def suppressed_address(raw: str) -> str:
    """A suppression entry as normalised as it can be: an invalid one is still kept."""
    try:
        return validate_address(raw)
    except ValueError:
        return raw


def load_suppressions(db: sqlite3.Connection, path: Path) -> None:
    """Claim every address on the suppression list in the seen database; no file, no claims."""
    if not path.exists():
        return
    suppressions = open_table(path)
    if suppressions is not None:
        with suppressions.file:
            db.executemany(CLAIM, suppression_claims(suppressions))


def suppression_claims(table: Table) -> Iterator[tuple[int, int, int, int]]:
    """Each address on the list as a claim (its two hashes, its line, SUPPRESSED)."""
    email = table.index["email"]
    reader = table.reader
    previous = table.header_line
    try:
        for row in reader:
            line, previous = previous + 1, reader.line_num
            raw = restore(row[email].strip()) if len(row) > email else ""
            if raw:
                yield *digest(address_key(suppressed_address(raw))), line, SUPPRESSED
    except csv.Error as e:
        raise SubscribersError(
            f"{table.path}:{previous + 1}: not valid CSV ({e}). Fix this line: an address "
            "on the suppression list must never be missed."
        ) from None


_SUPPRESSION_COLUMNS: Final = ("email", "reason", "added_at")


def append_suppressions(path: Path, entries: Iterable[tuple[str, str]]) -> int:
    """Add (address, reason) entries to the suppression list; return how many were new.

    An address already on the list, in any case, or repeated in `entries`, is written once.
    The file is created with its header if missing, and flushed and fsynced before returning:
    it is what keeps mail from people who asked for none, so it must survive a crash. Rows
    follow the existing file's column order and delimiter. ValueError for an empty address.
    """
    scratch, db = scratch_db()
    try:
        columns, delimiter, newline = list(_SUPPRESSION_COLUMNS), ",", "\n"
        created = not path.exists()
        table = None if created else open_table(path)
        prefix = "" if created else ("\n" if _lacks_final_newline(path) else "")
        if table is None:
            prefix += ",".join(columns) + newline
        else:
            with table.file:
                db.executemany(CLAIM, suppression_claims(table))
            columns, delimiter, newline = table.columns, table.delimiter, table.newline
        added_at = datetime.now(UTC).isoformat(timespec="seconds")
        added = 0
        with path.open("a", encoding="utf-8", newline="") as file:
            file.write(prefix)
            writer = CellWriter(file, delimiter=delimiter, lineterminator=newline)
            for email, reason in entries:
                raw = email.strip()
                if not raw:
                    raise ValueError(f"a suppression entry has no address (reason {reason!r})")
                address = suppressed_address(raw)
                cursor = db.execute(CLAIM, (*digest(address_key(address)), 0, SUPPRESSED))
                if cursor.rowcount:
                    values = {"email": address, "reason": reason, "added_at": added_at}
                    writer.writerow([values.get(c.lower(), "") for c in columns])
                    added += 1
            file.flush()
            os.fsync(file.fileno())
        if created:
            _fsync_directory(path.parent)
        return added
    finally:
        db.close()
        scratch.cleanup()


def _lacks_final_newline(path: Path) -> bool:
    with path.open("rb") as file:
        if file.seek(0, os.SEEK_END) == 0:
            return False
        file.seek(-1, os.SEEK_END)
        return file.read(1) not in (b"\n", b"\r")


def _fsync_directory(directory: Path) -> None:
    """A new file survives a crash only once its directory entry is on disk too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
