"""Subscriber lists: a CSV file read as a stream of subscribers and skipped rows.

A list can have a million rows, so nothing here holds them all. Rows are parsed one at a
time, and the addresses already seen (for de-duplication and the suppression list) live in
a scratch SQLite file in a temporary directory, removed when the stream closes.

Every data row comes out, in file order, as a `Subscriber` or as a `Skipped` with its line
and why; only blank lines are not rows. Problems with the file as a whole (missing, empty,
not UTF-8 text, no `email` column) raise `SubscribersError` when it is opened, before the
first row, so a send never stops half way because of line 600,000.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from itertools import chain
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Final, Self

from newsletter.errors import SubscribersError
from newsletter.lists.addresses import (
    address_key,
    fast_normalise,
    library_normalise,
    validate_address,
)
from newsletter.lists.cells import CellWriter, restore

if TYPE_CHECKING:
    from _csv import Reader

__all__ = [
    "SkipReason",
    "Skipped",
    "Subscriber",
    "SubscriberStream",
    "append_suppressions",
    "read_subscribers",
]


class SkipReason(StrEnum):
    """Why a row gets no mail; the value is what reports and `counts` show."""

    INVALID = "invalid address"
    UNSUBSCRIBED = "unsubscribed"
    DUPLICATE = "duplicate"
    SUPPRESSED = "suppressed"
    NOT_TAGGED = "not tagged"
    MALFORMED = "malformed row"
    UNSENDABLE = "provider cannot take it"


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One person to send to: the row's values, with the address normalised."""

    line: int
    email: str
    name: str
    tags: frozenset[str]
    fields: Mapping[str, str]

    @property
    def key(self) -> str:
        """Addresses that differ only in case are one person (for duplicates and ledgers)."""
        return address_key(self.email)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A row that gets no mail, where it is, and why, so that nothing vanishes silently."""

    line: int
    email: str
    reason: SkipReason
    detail: str


# --- the suppression list's addresses -------------------------------------------------------


def _suppressed_address(raw: str) -> str:
    """A suppression entry as normalised as it can be: an invalid one is still kept."""
    try:
        return validate_address(raw)
    except ValueError:
        return raw


# --- opening a CSV file ---------------------------------------------------------------------

_CHUNK: Final = 1 << 20
_SAVE_AS_UTF8: Final = 'Save it as UTF-8 CSV (in Excel: Save As, "CSV UTF-8") and try again.'
_NOT_CSV: Final = (
    (b"\xff\xfe", 'UTF-16 text (Excel\'s "Unicode Text")'),
    (b"\xfe\xff", "UTF-16 text"),
    (b"PK\x03\x04", "a zip file, such as an Excel workbook (.xlsx)"),
    (b"\xd0\xcf\x11\xe0", "an old Excel workbook (.xls)"),
)
_CONTROL_BYTES: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _check_text(path: Path) -> None:
    """Raise now, naming the line, if the file is not UTF-8 text without NUL bytes.

    One pass in 1 MB chunks (~40 ms for a million rows): cheaper than finding out mid-send.
    """
    try:
        file = path.open("rb")
    except FileNotFoundError:
        raise SubscribersError(
            f"{path}: no such file. Check the path; a subscriber list is a CSV file "
            "with an `email` column (see subscribers.example.csv)."
        ) from None
    except OSError as e:
        raise SubscribersError(f"{path}: cannot read it ({e.strerror}).") from None
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with file:
        chunk = file.read(_CHUNK)
        for signature, kind in _NOT_CSV:
            if chunk.startswith(signature):
                raise SubscribersError(f"{path}: this is {kind}, not CSV. {_SAVE_AS_UTF8}")
        while chunk:
            nul = chunk.find(b"\0")
            if nul >= 0:
                at_line = line + chunk.count(b"\n", 0, nul)
                raise SubscribersError(
                    f"{path}:{at_line}: contains a NUL byte, so it is not CSV text "
                    f"(a spreadsheet or UTF-16 export?). {_SAVE_AS_UTF8}"
                )
            if decoder.getstate()[0] or not chunk.isascii():  # ASCII is UTF-8: skip the work
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as e:  # e.object is what was pending, then chunk
                    at_line = line + e.object.count(b"\n", 0, e.start)
                    raise _not_utf8(path, at_line, e.object, e.start) from None
            line += chunk.count(b"\n")
            chunk = file.read(_CHUNK)
        tail = decoder.getstate()[0]
        if tail:
            raise _not_utf8(path, line, tail, 0)


def _not_utf8(path: Path, line: int, data: bytes, at: int) -> SubscribersError:
    """Say which line, and whether it looks like Latin-1 text or like no text at all."""
    if _CONTROL_BYTES.search(data, max(at - 256, 0), at + 256):
        return SubscribersError(
            f"{path}:{line}: binary data, not text: this is not a CSV file. {_SAVE_AS_UTF8}"
        )
    start, end = data.rfind(b"\n", 0, at) + 1, data.find(b"\n", at)
    shown = data[start : end if end >= 0 else len(data)].decode("cp1252", "replace").strip()
    return SubscribersError(
        f"{path}:{line}: not UTF-8: byte 0x{data[at]:02X} in {shown[:60]!r} looks like "
        f"Latin-1 or Windows-1252. {_SAVE_AS_UTF8}"
    )


@dataclass
class _Table:
    """A CSV file opened past its header: what subscriber and suppression lists share."""

    path: Path
    file: IO[str]
    reader: Reader
    columns: list[str]
    index: dict[str, int]  # lowercased column name -> position
    header_line: int  # the physical line the header ends on
    delimiter: str
    newline: str


def _open_table(path: Path) -> _Table | None:
    """Open a CSV file with an `email` column, or None if it has no header at all."""
    _check_text(path)
    file = path.open(encoding="utf-8-sig", newline="")
    try:
        return _read_header(path, file)
    except BaseException:
        file.close()
        raise


def _read_header(path: Path, file: IO[str]) -> _Table | None:
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
    return _Table(path, file, reader, columns, index, reader.line_num, delimiter, newline)


# --- the scratch database -------------------------------------------------------------------

# Who claimed each address first: a subscriber row (its status) or the suppression list.
# Small integers, not words: the table's row size is what its speed depends on.
_SUBSCRIBED: Final = 1
_UNSUBSCRIBED: Final = 2
_SUPPRESSED: Final = 3
_CLAIM: Final = "INSERT OR IGNORE INTO seen (h1, h2, line, claim) VALUES (?, ?, ?, ?)"
_CLAIMED_BY: Final = "SELECT line, claim FROM seen WHERE h1 = ? AND h2 = ?"


def _digest(key: str) -> tuple[int, int]:
    """Two independent 64-bit hashes of a key: the scratch table's primary key.

    16 bytes instead of the address make the table half the size, and its size is what a
    million random inserts cost (2.9 µs each instead of 4.1 µs). Two addresses would share
    both hashes with a chance of about n²/2¹²⁹ (10⁻²⁷ for a million rows), and even then one
    would be skipped as a duplicate, never mailed twice. Valid only within this process.
    """
    return hash(key), hash(key + "\0")


def _scratch_db() -> tuple[tempfile.TemporaryDirectory[str], sqlite3.Connection]:
    """A throwaway SQLite file of the addresses seen so far.

    A Python set of a million addresses costs ~100 MB; this costs SQLite's 2 MB page cache.
    One open transaction, no journal, no fsync: it is deleted afterwards anyway. Not tied to
    the creating thread, since a send may consume the stream from a worker thread.
    """
    scratch = tempfile.TemporaryDirectory(prefix="newsletter-")
    db = sqlite3.connect(
        Path(scratch.name) / "seen.sqlite3", isolation_level=None, check_same_thread=False
    )
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA locking_mode = EXCLUSIVE")
    db.execute(
        "CREATE TABLE seen (h1 INTEGER, h2 INTEGER, line INTEGER, claim INTEGER,"
        " PRIMARY KEY (h1, h2)) WITHOUT ROWID"
    )
    db.execute("BEGIN")
    return scratch, db


def _suppression_claims(table: _Table) -> Iterator[tuple[int, int, int, int]]:
    email = table.index["email"]
    reader = table.reader
    previous = table.header_line
    try:
        for row in reader:
            line, previous = previous + 1, reader.line_num
            raw = restore(row[email].strip()) if len(row) > email else ""
            if raw:
                yield *_digest(address_key(_suppressed_address(raw))), line, _SUPPRESSED
    except csv.Error as e:
        raise SubscribersError(
            f"{table.path}:{previous + 1}: not valid CSV ({e}). Fix this line: an address "
            "on the suppression list must never be missed."
        ) from None


# --- reading subscribers --------------------------------------------------------------------

_STATUSES: Final = {"": _SUBSCRIBED, "subscribed": _SUBSCRIBED, "unsubscribed": _UNSUBSCRIBED}
_NO_TAGS: Final[frozenset[str]] = frozenset()
_TAG_CACHE_SIZE: Final = 4096
# A name goes into the To header: a line break there would end the header (and the send, at
# that row), so such a row is skipped with its line rather than mailed with a mangled name.
_NOT_ONE_LINE: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_NAME_NOT_ONE_LINE: Final = (
    "the name contains a line break or a control character; make it one line of text"
)


class SubscriberStream:
    """The rows of a subscriber list in file order, each a `Subscriber` or a `Skipped`.

    Use it as a context manager (or call `close`) so the scratch database goes away; it also
    closes itself after the last row. `counts` ("ok" and each `SkipReason`) grows as rows are
    consumed.

    The first row of an address claims it. A later row of the same address, in any case, is
    a duplicate ("duplicate of line N"), or "unsubscribed at line N" if the first row said
    unsubscribed. The reverse cannot be undone in a stream: an unsubscribed row after a kept
    row is skipped with a detail saying so; the suppression list is the way to stop mail.
    Rows outside the tag filter still claim their address. A row whose fields are all empty
    (",,") is a blank line; a row with extra fields is malformed unless the extras are empty,
    and so is one whose name (it goes into the To header) holds a line break.
    """

    path: Path
    columns: list[str]
    counts: Counter[str]

    def __init__(
        self,
        path: Path,
        *,
        tags: Collection[str] = (),
        suppressions: Path | None = None,
        suppressed: Iterable[str] = (),
        refuse: Callable[[str], str | None] | None = None,
    ) -> None:
        self.path = path
        self._refuse = refuse
        self.counts = Counter({"ok": 0, **{reason.value: 0 for reason in SkipReason}})
        self._table: _Table | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._db: sqlite3.Connection | None = None
        self._rows: Generator[Subscriber | Skipped] | None = None
        if isinstance(tags, str):
            tags = (tags,)
        wanted = frozenset(t.strip().lower() for t in tags if t.strip())
        try:
            table = _open_table(path)
            if table is None:
                raise SubscribersError(
                    f"{path}: the file is empty. A subscriber list starts with a header line "
                    "such as `email,name,tags`, then one subscriber per line."
                )
            self._table = table
            if wanted and "tags" not in table.index:
                raise SubscribersError(
                    f"{path}:{table.header_line}: cannot pick subscribers by tag: there is no "
                    f"`tags` column (the header has {', '.join(table.columns)}). Add one, or "
                    "send without a tag filter."
                )
            self.columns = table.columns
            self._scratch, self._db = _scratch_db()
            source = ""
            if suppressions is not None:
                source = suppressions.name
                self._load_suppressions(self._db, suppressions)
            # The store's suppressions (line 0): whatever wrote them, a send honours them.
            self._db.executemany(
                _CLAIM,
                (
                    (*_digest(address_key(_suppressed_address(a))), 0, _SUPPRESSED)
                    for a in suppressed
                ),
            )
        except BaseException:
            self.close()
            raise
        self._rows = self._parse(table, self._db, wanted, source)

    @staticmethod
    def _load_suppressions(db: sqlite3.Connection, path: Path) -> None:
        if not path.exists():
            return
        suppressions = _open_table(path)
        if suppressions is not None:
            with suppressions.file:
                db.executemany(_CLAIM, _suppression_claims(suppressions))

    def _parse(
        self, table: _Table, db: sqlite3.Connection, wanted: frozenset[str], source: str
    ) -> Generator[Subscriber | Skipped]:
        # One flat loop with everything in locals: it runs a million times per send.
        reader, columns, counts = table.reader, table.columns, self.counts
        ncols = len(columns)
        # A missing column reads the empty string appended to every row, at index ncols.
        email_i = table.index["email"]
        name_i, first_i, tags_i, status_i = (
            table.index.get(c, ncols) for c in ("name", "first_name", "tags", "status")
        )
        named = [(c, i) for i, c in enumerate(columns) if c]  # "a,b," has a nameless column
        wanted_text = ", ".join(sorted(wanted))
        tag_cache: dict[str, frozenset[str]] = {"": _NO_TAGS}
        cursor = db.cursor()
        claim, sql_claim = cursor.execute, _CLAIM
        statuses, normalise, new = _STATUSES.get, fast_normalise, Subscriber
        refuse = self._refuse
        previous = table.header_line

        def skip(line: int, raw: str, reason: SkipReason, detail: str) -> Skipped:
            counts[reason] += 1
            return Skipped(line, raw, reason, detail)

        while True:
            try:
                for row in reader:
                    line, previous = previous + 1, reader.line_num
                    n = len(row)
                    if n != ncols:
                        if n == 0:
                            continue
                        if n > ncols:
                            if any(v.strip() for v in row[ncols:]):
                                raw = row[email_i].strip()
                                detail = f"{n} fields, the header has {ncols}"
                                yield skip(line, raw, SkipReason.MALFORMED, detail)
                                continue
                            del row[ncols:]
                        else:
                            row.extend([""] * (ncols - n))
                    row = [v.strip() for v in row]
                    row.append("")
                    raw = row[email_i]
                    if not raw:
                        if any(row):
                            detail = "the email column is empty"
                            yield skip(line, raw, SkipReason.INVALID, detail)
                        continue
                    status = statuses(row[status_i].lower())
                    if status is None:
                        detail = (
                            f"unknown status {row[status_i]!r}: use subscribed, unsubscribed, "
                            "or leave it empty"
                        )
                        yield skip(line, raw, SkipReason.MALFORMED, detail)
                        continue
                    email = normalise(raw)
                    if email is None:
                        try:
                            email = library_normalise(raw)
                        except ValueError as e:
                            yield skip(line, raw, SkipReason.INVALID, str(e))
                            continue
                    key = email.lower()  # address_key, inlined
                    h1, h2 = hash(key), hash(key + "\0")  # _digest, inlined
                    claim(sql_claim, (h1, h2, line, status))
                    if cursor.rowcount == 0:
                        first, claimed = db.execute(_CLAIMED_BY, (h1, h2)).fetchone()
                        if claimed == _SUPPRESSED:
                            detail = (
                                f"on the suppression list ({source}, line {first})"
                                if first
                                else "on the suppression list (the audience store)"
                            )
                            yield skip(line, raw, SkipReason.SUPPRESSED, detail)
                        elif claimed == _UNSUBSCRIBED:
                            detail = f"unsubscribed at line {first}"
                            yield skip(line, raw, SkipReason.UNSUBSCRIBED, detail)
                        elif status == _UNSUBSCRIBED:
                            detail = (
                                f"unsubscribed here, but line {first} subscribes the same "
                                "address and comes first: remove one of the two rows"
                            )
                            yield skip(line, raw, SkipReason.UNSUBSCRIBED, detail)
                        else:
                            detail = f"duplicate of line {first}"
                            yield skip(line, raw, SkipReason.DUPLICATE, detail)
                        continue
                    if status == _UNSUBSCRIBED:
                        yield skip(line, raw, SkipReason.UNSUBSCRIBED, "status is unsubscribed")
                        continue
                    text = row[tags_i]
                    tags = tag_cache.get(text)
                    if tags is None:
                        tags = frozenset(filter(None, (t.strip() for t in text.lower().split(";"))))
                        if len(tag_cache) < _TAG_CACHE_SIZE:
                            tag_cache[text] = tags
                    if wanted and wanted.isdisjoint(tags):
                        detail = f"has none of the tags {wanted_text}"
                        yield skip(line, raw, SkipReason.NOT_TAGGED, detail)
                        continue
                    name = row[name_i] or row[first_i]
                    if not name.isprintable() and _NOT_ONE_LINE.search(name):
                        yield skip(line, raw, SkipReason.MALFORMED, _NAME_NOT_ONE_LINE)
                        continue
                    if refuse is not None and (why := refuse(email)):
                        yield skip(line, raw, SkipReason.UNSENDABLE, why)
                        continue
                    fields = {c: row[i] for c, i in named}
                    counts["ok"] += 1
                    yield new(line, email, name, tags, fields)
                self._release()  # the end of the file: the scratch database can go now
                return
            except csv.Error as e:
                line, previous = previous + 1, reader.line_num
                detail = f"not valid CSV ({e})"
                if previous > line:
                    detail += f"; lines {line}-{previous} were read as one row: is a quote missing?"
                yield skip(line, "", SkipReason.MALFORMED, detail)

    def __iter__(self) -> Iterator[Subscriber | Skipped]:
        # The generator itself, so a for loop does not pay for __next__ on every row.
        return self._rows if self._rows is not None else iter(())

    def __next__(self) -> Subscriber | Skipped:
        if self._rows is None:
            raise StopIteration
        return next(self._rows)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file and delete the scratch database; safe to call more than once."""
        if self._rows is not None:
            self._rows.close()
        self._release()

    def _release(self) -> None:
        if self._table is not None:
            self._table.file.close()
            self._table = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


def read_subscribers(
    path: Path,
    *,
    tags: Collection[str] = (),
    suppressions: Path | None = None,
    suppressed: Iterable[str] = (),
    refuse: Callable[[str], str | None] | None = None,
) -> SubscriberStream:
    """Open a subscriber list as a stream; whole-file problems raise here, before any row.

    `tags` keeps only subscribers with any of them; `suppressions` is a CSV file with an
    `email` column (a missing file is an empty list); `suppressed` are more addresses never
    to mail (the store's); `refuse` says why the provider cannot take a normalised address
    (the row is skipped with that reason), or None.
    """
    return SubscriberStream(
        path, tags=tags, suppressions=suppressions, suppressed=suppressed, refuse=refuse
    )


# --- the suppression list -------------------------------------------------------------------

_SUPPRESSION_COLUMNS: Final = ("email", "reason", "added_at")


def append_suppressions(path: Path, entries: Iterable[tuple[str, str]]) -> int:
    """Add (address, reason) entries to the suppression list; return how many were new.

    An address already on the list, in any case, or repeated in `entries`, is written once.
    The file is created with its header if missing, and flushed and fsynced before returning:
    it is what keeps mail from people who asked for none, so it must survive a crash. Rows
    follow the existing file's column order and delimiter. ValueError for an empty address.
    """
    scratch, db = _scratch_db()
    try:
        columns, delimiter, newline = list(_SUPPRESSION_COLUMNS), ",", "\n"
        created = not path.exists()
        table = None if created else _open_table(path)
        prefix = "" if created else ("\n" if _lacks_final_newline(path) else "")
        if table is None:
            prefix += ",".join(columns) + newline
        else:
            with table.file:
                db.executemany(_CLAIM, _suppression_claims(table))
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
                address = _suppressed_address(raw)
                cursor = db.execute(_CLAIM, (*_digest(address_key(address)), 0, _SUPPRESSED))
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
