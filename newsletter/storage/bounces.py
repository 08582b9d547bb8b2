"""What the bounce mailbox and the provider told us after a send, kept between runs.

One small SQLite file in the state folder, apart from the ledger, holding:

    events     one row per bounce, complaint or unsubscribe learnt about an address,
               with the issue it answers (when known): soft-bounce streaks and the
               per-issue counts of `newsletter status` are read from it
    processed  the mailbox messages already read (a hash of each Message-ID), so that a
               rerun counts nothing twice, whatever the mailbox kept of our marks
    syncs      when each provider list was last pulled, so the next sync starts there

The suppressions themselves live elsewhere (see `lists.suppressions`): this file is what
we need to decide, not the decision.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from newsletter.errors import LedgerError
from newsletter.lists.addresses import address_key
from newsletter.storage.connect import configure, connect

FILENAME = "bounces.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY,
    email    TEXT NOT NULL,
    kind     TEXT NOT NULL,
    issue    TEXT,
    at       TEXT NOT NULL,
    source   TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT '',
    dedupe   TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS events_email ON events(email);
CREATE INDEX IF NOT EXISTS events_issue ON events(issue);
CREATE TABLE IF NOT EXISTS processed (
    key TEXT PRIMARY KEY,
    at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS syncs (
    name TEXT PRIMARY KEY,
    last INTEGER NOT NULL
);
"""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Event:
    """One thing learnt about an address: `kind` is hard, soft, complaint, unsubscribe,
    block or invalid; `issue` the issue it answers, when known."""

    email: str
    kind: str
    issue: str | None
    at: str
    source: str
    detail: str = ""


class BounceState:
    """The bounce state file; a context manager. Every write commits at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = connect(path)
            configure(self._conn)
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"{path}: cannot open the bounce state: {exc}") from None

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Keep the writes inside together: all of them, or (on an exception) none.

        The caller flushes its suppressions before the block ends, so a crash never leaves
        an event recorded whose suppression was not written (a rerun redoes both).
        """
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def __enter__(self) -> BounceState:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # processed mailbox messages

    def is_processed(self, key: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM processed WHERE key = ?", (key,)).fetchone()
        return row is not None

    def mark_processed(self, key: str) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO processed (key, at) VALUES (?, ?)", (key, now_iso())
        )

    # events

    def record(self, event: Event, dedupe: str) -> bool:
        """Keep the event unless one with the same `dedupe` key is kept; True if it is new."""
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO events (email, kind, issue, at, source, detail, dedupe) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                address_key(event.email),
                event.kind,
                event.issue,
                event.at,
                event.source,
                event.detail,
                dedupe,
            ),
        )
        return cursor.rowcount > 0

    def events(self, email: str) -> list[Event]:
        """Everything known about one address, oldest first."""
        rows = self._conn.execute(
            "SELECT email, kind, issue, at, source, detail FROM events WHERE email = ? "
            "ORDER BY at, id",
            (address_key(email),),
        )
        return [Event(*row) for row in rows]

    def issue_counts(self, issue: str) -> Counter[str]:
        """Addresses per kind of event for one issue (an address counts once per kind)."""
        rows = self._conn.execute(
            "SELECT kind, count(DISTINCT email) FROM events WHERE issue = ? GROUP BY kind",
            (issue,),
        )
        return Counter(dict(rows.fetchall()))

    def soft_issues(self, email: str) -> set[str]:
        rows = self._conn.execute(
            "SELECT DISTINCT issue FROM events WHERE email = ? AND kind = 'soft' "
            "AND issue IS NOT NULL",
            (address_key(email),),
        )
        return {row[0] for row in rows}

    def forget(self, email: str) -> int:
        """Drop an address's soft bounces: a removed suppression starts a new streak."""
        cursor = self._conn.execute(
            "DELETE FROM events WHERE email = ? AND kind = 'soft'", (address_key(email),)
        )
        return cursor.rowcount

    # provider syncs

    def last_sync(self, name: str) -> int | None:
        """Unix time up to which `name` was pulled, or None if never."""
        row = self._conn.execute("SELECT last FROM syncs WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def set_last_sync(self, name: str, last: int) -> None:
        self._conn.execute(
            "INSERT INTO syncs (name, last) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET last = excluded.last",
            (name, last),
        )


def open_state(state_dir: Path) -> BounceState:
    return BounceState(state_dir / FILENAME)


def existing_state(state_dir: Path) -> BounceState | None:
    """The state if a bounce run or sync made one; reading never creates it."""
    path = state_dir / FILENAME
    return BounceState(path) if path.is_file() else None
