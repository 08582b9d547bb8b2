"""Subscriber lists: a CSV file read as a stream of subscribers and skipped rows.

A list can have a million rows, so nothing here holds them all. Rows are parsed one at a
time, and the addresses already seen (for de-duplication and the suppression list) live in
a scratch SQLite file in a temporary directory, removed when the stream closes.

The ideas it stands on each have a module of their own: `encoding` (is it UTF-8 text?),
`table` (the header and delimiter), `seen` (the scratch database), and `suppression_csv`
(reading and appending suppressions.csv).

Every data row comes out, in file order, as a `Subscriber` or as a `Skipped` with its line
and why; only blank lines are not rows. Problems with the file as a whole (missing, empty,
not UTF-8 text, no `email` column) raise `SubscribersError` when it is opened, before the
first row, so a send never stops half way because of line 600,000.
"""

from __future__ import annotations

import csv
import re
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from newsletter.errors import SubscribersError
from newsletter.lists.addresses import address_key, fast_normalise, library_normalise
from newsletter.lists.seen import (
    CLAIM,
    CLAIMED_BY,
    SUBSCRIBED,
    SUPPRESSED,
    UNSUBSCRIBED,
    digest,
    scratch_db,
)
from newsletter.lists.suppression_csv import load_suppressions, suppressed_address
from newsletter.lists.table import Table, open_table

__all__ = [
    "SkipReason",
    "Skipped",
    "Subscriber",
    "SubscriberStream",
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


# --- reading subscribers --------------------------------------------------------------------

_STATUSES: Final = {"": SUBSCRIBED, "subscribed": SUBSCRIBED, "unsubscribed": UNSUBSCRIBED}
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
        self._table: Table | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._db: sqlite3.Connection | None = None
        self._rows: Generator[Subscriber | Skipped] | None = None
        if isinstance(tags, str):
            tags = (tags,)
        wanted = frozenset(t.strip().lower() for t in tags if t.strip())
        try:
            table = open_table(path)
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
            self._scratch, self._db = scratch_db()
            source = ""
            if suppressions is not None:
                source = suppressions.name
                load_suppressions(self._db, suppressions)
            # The store's suppressions (line 0): whatever wrote them, a send honours them.
            self._db.executemany(
                CLAIM,
                ((*digest(address_key(suppressed_address(a))), 0, SUPPRESSED) for a in suppressed),
            )
        except BaseException:
            self.close()
            raise
        self._rows = self._parse(table, self._db, wanted, source)

    def _parse(
        self, table: Table, db: sqlite3.Connection, wanted: frozenset[str], source: str
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
        claim, sql_claim = cursor.execute, CLAIM
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
                        first, claimed = db.execute(CLAIMED_BY, (h1, h2)).fetchone()
                        if claimed == SUPPRESSED:
                            detail = (
                                f"on the suppression list ({source}, line {first})"
                                if first
                                else "on the suppression list (the audience store)"
                            )
                            yield skip(line, raw, SkipReason.SUPPRESSED, detail)
                        elif claimed == UNSUBSCRIBED:
                            detail = f"unsubscribed at line {first}"
                            yield skip(line, raw, SkipReason.UNSUBSCRIBED, detail)
                        elif status == UNSUBSCRIBED:
                            detail = (
                                f"unsubscribed here, but line {first} subscribes the same "
                                "address and comes first: remove one of the two rows"
                            )
                            yield skip(line, raw, SkipReason.UNSUBSCRIBED, detail)
                        else:
                            detail = f"duplicate of line {first}"
                            yield skip(line, raw, SkipReason.DUPLICATE, detail)
                        continue
                    if status == UNSUBSCRIBED:
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
