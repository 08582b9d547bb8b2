"""The embedded store: suppressions and the audience in SQLite, beside the ledger.

`.newsletter/audience.sqlite` is its own file, not more tables in the ledger, so a million-
recipient send's ledger writes never wait behind a reader's unsubscribe. Write-ahead logging
lets readers run during a write; `busy_timeout` makes a writer wait for another instead of
failing; every write is one `BEGIN IMMEDIATE` transaction of a few rows. That is what lets
`newsletter serve` and `newsletter send` run at once on one workspace.

Over 400 lines: one implementation of the `Store` protocol, whose methods share the
connection and the transaction rule above; splitting it would split one class.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from newsletter.errors import LedgerError
from newsletter.lists.addresses import address_key
from newsletter.storage.connect import BUSY_TIMEOUT_S, configure, connect, immediate
from newsletter.storage.ledger import Ledger
from newsletter.storage.lock import send_lock
from newsletter.storage.store import (
    STATUS_OF_KIND,
    Consent,
    LedgerStore,
    Member,
    MemberStatus,
    Signup,
    Suppression,
    SuppressionKind,
)
from newsletter.storage.waiting import WaitingSend, hold_waiting, still_waiting, waiting_sends

SCHEMA_VERSION = 1
_PAGE = 1000

#: Checked by mypy: SQLite's ledger keeps the `LedgerStore` contract the package relies on.
_LEDGER: type[LedgerStore] = Ledger

_SCHEMA = """
CREATE TABLE IF NOT EXISTS suppressions (
    key      TEXT PRIMARY KEY,
    email    TEXT NOT NULL,
    reason   TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('unsubscribe', 'bounce', 'complaint', 'manual')),
    source   TEXT NOT NULL,
    issue    TEXT,
    added_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS suppressions_issue ON suppressions(issue);
CREATE TABLE IF NOT EXISTS members (
    key            TEXT PRIMARY KEY,
    email          TEXT NOT NULL,
    name           TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN
                   ('subscribed', 'pending', 'unsubscribed', 'bounced', 'complained')),
    tags           TEXT NOT NULL,
    fields_json    TEXT NOT NULL,
    asked_at       TEXT NOT NULL,
    confirmed_at   TEXT NOT NULL,
    consent_source TEXT NOT NULL,
    consent_ip     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS signups (
    nonce    TEXT PRIMARY KEY,
    email    TEXT NOT NULL,
    name     TEXT NOT NULL,
    asked_at TEXT NOT NULL,
    source   TEXT NOT NULL,
    ip       TEXT NOT NULL,
    used_at  TEXT
);
CREATE TABLE IF NOT EXISTS imports (
    name        TEXT PRIMARY KEY,
    sha256      TEXT NOT NULL,
    imported_at TEXT NOT NULL
)
"""
_MEMBER_COLUMNS = (
    "email, name, status, tags, fields_json, asked_at, confirmed_at, consent_source, "
    "consent_ip, updated_at"
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _member(row: tuple[Any, ...]) -> Member:
    return Member(
        email=row[0],
        name=row[1],
        status=cast(MemberStatus, row[2]),
        tags=tuple(t for t in row[3].split(";") if t),
        fields=json.loads(row[4]),
        consent=Consent(asked_at=row[5], confirmed_at=row[6], source=row[7], ip=row[8]),
        updated_at=row[9],
    )


class SQLiteStore:
    """The `Store` of one workspace's state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / "audience.sqlite"
        self._ledger: Ledger | None = None
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LedgerError(f"{state_dir}: cannot create the state folder: {e.strerror}") from e
        with self._translate():
            # threads: the service answers from a thread pool, one call at a time.
            self._conn = connect(self.path, threads=True)
        try:
            with self._translate():
                configure(self._conn)
                with self._write() as conn:
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    if version > SCHEMA_VERSION:
                        raise LedgerError(
                            f"{self.path}: written by a newer newsletter (schema {version}); "
                            "upgrade newsletter before using this workspace"
                        )
                    if version == 0:
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                conn.execute(statement)
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._conn.close()
            raise

    @staticmethod
    def exists(state_dir: Path) -> bool:
        return (state_dir / "audience.sqlite").is_file()

    # --- plumbing ---

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """What SQLite says about the file, as an error the editor can act on."""
        try:
            yield
        except sqlite3.OperationalError as e:
            name = getattr(e, "sqlite_errorname", "")
            if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
                hint = f"another process kept it locked for more than {BUSY_TIMEOUT_S:.0f} s"
            elif name.startswith("SQLITE_FULL"):
                hint = "the disk is full; free some space"
            else:
                hint = "it cannot be read or written; check the path and its permissions"
            raise LedgerError(f"{self.path}: {hint} (SQLite: {e})") from e
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.IntegrityError | sqlite3.ProgrammingError):
                raise
            raise LedgerError(
                f"{self.path}: damaged or not a newsletter store; move it away and restore a "
                f"backup (SQLite: {e})"
            ) from e

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; IMMEDIATE, so waiting for a writer uses the timeout."""
        with self._translate(), immediate(self._conn) as conn:
            yield conn

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._translate():
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the ledger and the lock ---

    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(self.state_dir / "ledger.sqlite")
        return self._ledger

    def has_ledger(self) -> bool:
        return (self.state_dir / "ledger.sqlite").is_file()

    @staticmethod
    def existing_ledger(state_dir: Path) -> Ledger | None:
        path = state_dir / "ledger.sqlite"
        return Ledger(path) if path.is_file() else None

    def send_lock(self, issue: str) -> AbstractContextManager[None]:
        return send_lock(self.state_dir, issue)

    def hold_waiting(
        self, issue: str, provider: str, send_at: datetime
    ) -> AbstractContextManager[WaitingSend]:
        return hold_waiting(self.state_dir, issue, provider, send_at)

    @staticmethod
    def waiting_sends(state_dir: Path, issue: str | None = None) -> list[WaitingSend]:
        return waiting_sends(state_dir, issue)

    @staticmethod
    def still_waiting(state_dir: Path, send: WaitingSend) -> bool:
        return still_waiting(state_dir, send)

    # --- suppressions ---

    def suppress(self, entries: Iterable[Suppression]) -> int:
        now = _now()
        added = 0
        with self._write() as conn:
            for s in entries:
                email = s.email.strip()
                if not email:
                    raise ValueError(f"a suppression has no address (reason {s.reason!r})")
                added += conn.execute(
                    "INSERT OR IGNORE INTO suppressions "
                    "(key, email, reason, kind, source, issue, added_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        address_key(email),
                        email,
                        s.reason,
                        s.kind,
                        s.source,
                        s.issue,
                        s.added_at or now,
                    ),
                ).rowcount
                conn.execute(
                    "UPDATE members SET status = ?, updated_at = ? "
                    "WHERE key = ? AND status IN ('subscribed', 'pending')",
                    (STATUS_OF_KIND[s.kind], now, address_key(email)),
                )
        return added

    def unsuppress(self, email: str) -> bool:
        with self._write() as conn:
            return bool(
                conn.execute(
                    "DELETE FROM suppressions WHERE key = ?", (address_key(email.strip()),)
                ).rowcount
            )

    def suppression(self, email: str) -> Suppression | None:
        rows = self._read(
            "SELECT email, reason, kind, source, issue, added_at FROM suppressions WHERE key = ?",
            (address_key(email.strip()),),
        )
        return self._suppression(rows[0]) if rows else None

    @staticmethod
    def _suppression(row: tuple[Any, ...]) -> Suppression:
        return Suppression(
            email=row[0],
            reason=row[1],
            kind=cast(SuppressionKind, row[2]),
            source=row[3],
            issue=row[4],
            added_at=row[5],
        )

    def suppressions(self) -> Iterator[Suppression]:
        sql = (
            "SELECT email, reason, kind, source, issue, added_at, rowid FROM suppressions "
            "WHERE rowid > ? ORDER BY rowid LIMIT ?"
        )
        last = 0
        while rows := self._read(sql, (last, _PAGE)):
            yield from (self._suppression(row) for row in rows)
            last = rows[-1][6]

    def suppressed_addresses(self) -> Iterator[str]:
        sql = "SELECT key, email FROM suppressions WHERE key > ? ORDER BY key LIMIT ?"
        last = ""
        while rows := self._read(sql, (last, _PAGE)):
            yield from (row[1] for row in rows)
            last = rows[-1][0]

    def suppressions_by_issue(self, issue: str) -> dict[str, int]:
        rows = self._read(
            "SELECT kind, count(*) FROM suppressions WHERE issue = ? GROUP BY kind", (issue,)
        )
        return {row[0]: row[1] for row in rows}

    def note_import(self, name: str, digest: str) -> bool:
        with self._write() as conn:
            row = conn.execute("SELECT sha256 FROM imports WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] == digest:
                return False
            conn.execute(
                "INSERT INTO imports (name, sha256, imported_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, "
                "imported_at = excluded.imported_at",
                (name, digest, _now()),
            )
            return True

    # --- the audience ---

    def member(self, email: str) -> Member | None:
        rows = self._read(
            f"SELECT {_MEMBER_COLUMNS} FROM members WHERE key = ?", (address_key(email.strip()),)
        )
        return _member(rows[0]) if rows else None

    def members(self, status: MemberStatus | None = None) -> Iterator[Member]:
        where = "key > ?" + (" AND status = ?" if status else "")
        sql = f"SELECT {_MEMBER_COLUMNS}, key FROM members WHERE {where} ORDER BY key LIMIT ?"
        last = ""
        while rows := self._read(sql, (last, status, _PAGE) if status else (last, _PAGE)):
            yield from (_member(row) for row in rows)
            last = rows[-1][10]

    def put_member(self, member: Member) -> None:
        with self._write() as conn:
            self._put(conn, member)

    @staticmethod
    def _put(conn: sqlite3.Connection, m: Member) -> None:
        conn.execute(
            f"INSERT OR REPLACE INTO members (key, {_MEMBER_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                m.key,
                m.email,
                m.name,
                m.status,
                ";".join(m.tags),
                json.dumps(m.fields, sort_keys=True),
                m.consent.asked_at,
                m.consent.confirmed_at,
                m.consent.source,
                m.consent.ip,
                m.updated_at or _now(),
            ),
        )

    def set_status(self, email: str, status: MemberStatus) -> bool:
        with self._write() as conn:
            return bool(
                conn.execute(
                    "UPDATE members SET status = ?, updated_at = ? WHERE key = ?",
                    (status, _now(), address_key(email.strip())),
                ).rowcount
            )

    def resubscribe(self, email: str) -> bool:
        key = address_key(email.strip())
        with self._write() as conn:
            lifted = conn.execute("DELETE FROM suppressions WHERE key = ?", (key,)).rowcount
            changed = conn.execute(
                "UPDATE members SET status = 'subscribed', updated_at = ? "
                "WHERE key = ? AND status != 'subscribed'",
                (_now(), key),
            ).rowcount
        return bool(lifted or changed)

    def begin_signup(self, signup: Signup) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO signups (nonce, email, name, asked_at, source, ip) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    signup.nonce,
                    signup.email,
                    signup.name,
                    signup.asked_at,
                    signup.source,
                    signup.ip,
                ),
            )
            conn.execute(
                "INSERT OR IGNORE INTO members (key, email, name, status, tags, fields_json, "
                "asked_at, confirmed_at, consent_source, consent_ip, updated_at) "
                "VALUES (?, ?, ?, 'pending', '', '{}', ?, '', ?, ?, ?)",
                (
                    address_key(signup.email),
                    signup.email,
                    signup.name,
                    signup.asked_at,
                    signup.source,
                    signup.ip,
                    _now(),
                ),
            )

    def confirm_signup(self, nonce: str, confirmed_at: str) -> Member | None:
        with self._write() as conn:
            row = conn.execute(
                "UPDATE signups SET used_at = ? WHERE nonce = ? AND used_at IS NULL "
                "RETURNING email, name, asked_at, source, ip",
                (confirmed_at, nonce),
            ).fetchone()
            if row is None:
                return None
            email, name, asked_at, source, ip = row
            old = conn.execute(
                f"SELECT {_MEMBER_COLUMNS} FROM members WHERE key = ?", (address_key(email),)
            ).fetchone()
            before = _member(old) if old else None
            member = Member(
                email=email,
                name=name or (before.name if before else ""),
                status="subscribed",
                tags=before.tags if before else (),
                fields=before.fields if before else {},
                consent=Consent(asked_at=asked_at, confirmed_at=confirmed_at, source=source, ip=ip),
            )
            self._put(conn, member)
            # A fresh, confirmed request outweighs an earlier unsubscribe; never a bounce
            # or a complaint, which only the editor lifts (`newsletter audience resubscribe`).
            conn.execute(
                "DELETE FROM suppressions WHERE key = ? AND kind = 'unsubscribe'",
                (address_key(email),),
            )
            kept = conn.execute(
                "SELECT kind FROM suppressions WHERE key = ?", (address_key(email),)
            ).fetchone()
            if kept is not None:  # still suppressed: the status says why, not "subscribed"
                member = dataclasses.replace(member, status=STATUS_OF_KIND[kept[0]])
                self._put(conn, member)
        return member
