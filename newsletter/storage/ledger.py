"""The ledger: who was mailed which issue, so a crash or a rerun never mails anyone twice.

One SQLite file in the workspace (``.newsletter/ledger.sqlite``). Each recipient of an issue
has one current row in ``deliveries`` whose status moves like this::

    (none) -> pending -> sent       the provider accepted it: never sent again
                      -> rejected   refused for good (SMTP 550): never sent again
                      -> failed     provably not delivered: sent again on a rerun
                      -> unknown    no answer came back: sent again only with --retry-unknown

A batch is marked ``pending`` and committed before its request goes out; a process killed
mid-request leaves it ``pending``, and ``recover`` turns that into ``unknown`` at the start of
the next send. ``sends`` keeps, per send, a manifest of what was sent (hashes of the issue, the
templates and the list) and the final counts: the audit record.

Rows are kept per batch, side by side (schema 3, in `storage/schema.py`): a batch costs a few
pages of writes whatever the order of the list. Looking a reader up by address goes through
an index that `recover` brings up to date at the start of each send, and, for the rows newer
than it, through fingerprints in memory that each connection keeps (`Ledger._catch_up`).

What this module holds together is that state machine: the transitions, the checks that
refuse a second mail, and the lookups that feed them, in one class, because each write must
see every row the checks read in the same transaction. The SQL of the tables and migrations
lives in `storage/schema.py`; the send lock in `storage/lock.py`. Over 400 lines for that
reason; scheduled sends (`send --at`) add their few methods at the end, over the same rows.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from newsletter.errors import LedgerError
from newsletter.storage import schema
from newsletter.storage.connect import BUSY_TIMEOUT_S, configure, connect, immediate
from newsletter.storage.fingerprints import Fingerprints
from newsletter.storage.schedules import CANCELLED, SCHEDULED, SCHEDULES_SQL, Schedule
from newsletter.storage.schema import (
    FAILED,
    PENDING,
    REHEARSAL_PROVIDERS,
    REJECTED,
    SCHEMA_VERSION,
    SENT,
    STATUSES,
    UNKNOWN,
)

__all__ = [
    "FAILED",
    "PENDING",
    "REHEARSAL_PROVIDERS",
    "REJECTED",
    "SCHEMA_VERSION",
    "SENT",
    "STATUSES",
    "UNKNOWN",
    "Delivery",
    "Ledger",
    "Manifest",
    "SendRecord",
    "immediate",
    "is_rehearsal",
]

FINISHED_BATCH_STATUSES = (SENT, FAILED, UNKNOWN)

# Keys per query: a full batch in one statement.
MAX_KEYS_PER_QUERY = 1000
# Rows per query when streaming deliveries: constant memory, and no query held open.
ROWS_PER_PAGE = 1000
# Addresses sent since the index was brought up to date, past which a send brings it up to
# date again: the fingerprints of a send of any size then take at most 8 MB (13 MB while
# they grow). Lookups through a large index cost random-order lists about 4 µs an address
# (a benchmark of the ledger alone, docs/benchmarks.md), so lists up to a million rows
# never pay it. A connection that only reads starts its fingerprints afresh past twice as
# many, once another has folded what they hold into the index.
MAX_UNINDEXED = 1 << 20
INTERRUPTED = "interrupted: the process stopped before the provider answered"
# What os.link says on a filesystem that has no hard links (some network and FUSE mounts).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV})

# Batches of an issue whose rows are not in `recipient_index` yet.
_UNINDEXED = "SELECT id FROM batches WHERE issue = ? AND rehearsal = ? AND indexed = 0"
_UNINDEXED_12 = "SELECT id FROM batches WHERE issue = ?1 AND rehearsal = ?2 AND indexed = 0"

# The current row of each address of ?3 (a JSON array of keys) through the index. CROSS
# JOIN keeps SQLite to this order (the addresses first, a lookup each): with the tables the
# other way round, it would read every row of the issue.
_INDEXED_OF_KEYS = """
SELECT d.batch_id, d.key, d.status FROM json_each(?3) AS j
CROSS JOIN recipient_index AS r CROSS JOIN deliveries AS d
WHERE r.issue = ?1 AND r.rehearsal = ?2 AND r.key = j.value
AND d.batch_id = r.batch_id AND d.key = r.key AND d.current
"""
# The current row of each address of ?3 among the rows newer than the index: a lookup per
# unindexed batch, so only for the addresses the fingerprints cannot rule out.
_UNINDEXED_OF_KEYS = f"""
SELECT d.batch_id, d.key, d.status FROM json_each(?3) AS j CROSS JOIN deliveries AS d
WHERE d.key = j.value AND d.batch_id IN ({_UNINDEXED_12}) AND d.current
"""
# New rows, `pending`, each its address's current row; ?5 is a JSON array of [batch id,
# key, email]. `_PENDING_OF_EMAILS` is the same for one batch whose keys are the emails in
# ASCII lowercase (most lists): a flat array of emails, parsed in a third of the time.
_ON_CONFLICT_PENDING = (
    "ON CONFLICT (batch_id, key) DO UPDATE SET email = excluded.email, status = 'pending', "
    "provider_id = NULL, error = NULL, updated_at = excluded.updated_at, current = 1, "
    "seq = excluded.seq"
)
_PENDING_OF_ROWS = (
    "INSERT INTO deliveries (batch_id, key, issue, rehearsal, email, status, updated_at, "
    "current, seq) SELECT j.value ->> 0, j.value ->> 1, ?1, ?2, j.value ->> 2, 'pending', ?3, "
    f"1, ?4 + j.key + 1 FROM json_each(?5) AS j WHERE true {_ON_CONFLICT_PENDING}"
)
_PENDING_OF_EMAILS = (
    "INSERT INTO deliveries (batch_id, key, issue, rehearsal, email, status, updated_at, "
    "current, seq) SELECT ?6, lower(j.value), ?1, ?2, j.value, 'pending', ?3, "
    f"1, ?4 + j.key + 1 FROM json_each(?5) AS j WHERE true {_ON_CONFLICT_PENDING}"
)

_DELIVERY_COLUMNS = (
    "d.issue, d.key, d.email, d.status, d.batch_id, d.provider_id, d.error, d.updated_at, "
    "d.rehearsal"
)


@dataclass(frozen=True)
class Manifest:
    """What one send sent, by content hash: enough to tell later exactly what went out."""

    issue: str
    issue_path: str
    issue_sha256: str
    templates_sha256: str
    list_path: str
    list_sha256: str
    provider: str
    tool_version: str
    dry_run: bool = False
    #: The issue's title and date: the same issue renamed to another id is recognised.
    title: str = ""
    date: str = ""


@dataclass(frozen=True)
class Delivery:
    """One recipient's row: for reports and for deciding who still needs the issue."""

    issue: str
    key: str
    email: str
    status: str
    batch_id: int
    provider_id: str | None
    error: str | None
    updated_at: str
    rehearsal: bool = False


@dataclass(frozen=True)
class SendRecord:
    """One run of ``send``: its manifest and, once finished, its counts."""

    id: int
    issue: str
    provider: str
    started_at: str
    finished_at: str | None
    status: str
    manifest: Manifest
    counts: dict[str, int]


def is_rehearsal(provider: str) -> bool:
    """Whether a provider's deliveries are rehearsals (the outbox), kept apart from real ones."""
    return provider in REHEARSAL_PROVIDERS


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _delivery(row: Sequence[Any]) -> Delivery:
    issue, key, email, status, batch_id, provider_id, error, updated_at, rehearsal = row
    return Delivery(
        issue, key, email, status, batch_id, provider_id, error, updated_at, bool(rehearsal)
    )


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


class Ledger:
    """The send record of every issue, in one SQLite file; use it as a context manager."""

    def __init__(self, path: Path, *, threads: bool = False) -> None:
        """`threads`: the connection may be used from other threads (one at a time)."""
        self.path = path
        self._own_sends: set[int] = set()
        # (issue, rehearsal) -> the hashes of the addresses of its unindexed rows, and the
        # `seq` up to which they are in.
        self._fingerprints: dict[tuple[str, bool], Fingerprints] = {}
        self._filtered: dict[tuple[str, bool], int] = {}
        self._listings = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LedgerError(f"{path}: cannot create the ledger's folder: {e.strerror}") from e
        if not path.exists():
            self._create(path)
        try:
            empty = path.stat().st_size == 0
        except OSError as e:
            raise LedgerError(f"{path}: cannot read the ledger: {e.strerror}") from e
        if empty:
            # A ledger is never empty on disk (it is made whole, then linked into place):
            # an empty file is a truncated copy or a mistake, and taking it for a new ledger
            # would mail everyone again.
            raise LedgerError(
                f"{path}: the file is empty, so it is not a ledger (a new ledger would forget "
                "who was already mailed); restore it from a backup, or move it away if this "
                "workspace has really never sent anything"
            )
        with self._translate():
            self._conn = connect(path, threads=threads)
        try:
            with self._translate():
                self._open()
        except BaseException:
            self._conn.close()
            raise

    @staticmethod
    def _create(path: Path) -> None:
        """Make a new ledger whole beside `path`, then link it into place.

        So a ledger file is never seen half made, and an empty or schema-less file at `path`
        can be refused as foreign. Two processes creating it at once: the second link fails,
        and both use the first one's file.
        """
        tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
        try:
            conn = connect(tmp)
            try:
                configure(conn)
                conn.execute("BEGIN IMMEDIATE")
                schema.create(conn)
                conn.execute("COMMIT")
            finally:
                conn.close()
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
            except OSError as e:
                if e.errno not in _NO_HARD_LINKS:
                    raise
                # a filesystem without hard links: a rename, which is whole as well
                if not path.exists():
                    os.replace(tmp, path)
        except (OSError, sqlite3.Error) as e:
            raise LedgerError(f"{path}: cannot create the ledger: {e}") from e
        finally:
            for leftover in (
                tmp,
                tmp.with_name(tmp.name + "-wal"),
                tmp.with_name(tmp.name + "-shm"),
            ):
                leftover.unlink(missing_ok=True)

    def _open(self) -> None:
        conn = self._conn
        # The first read is where SQLite notices a file that is not a database.
        self._check_version(conn.execute("PRAGMA user_version").fetchone()[0])
        configure(conn)
        conn.execute("PRAGMA foreign_keys = ON")
        # An 8 MB page cache keeps memory flat: 64 MB grew a million-row send by 50 MB and was
        # no faster (bench/send.py). A batch of keys in random order dirties about one index
        # page per recipient; a larger WAL folds those writes into fewer checkpoints.
        conn.execute("PRAGMA cache_size = -8192")
        conn.execute("PRAGMA wal_autocheckpoint = 10000")
        with self._transaction():
            # Again inside the lock: another process may have migrated it meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version)
            if version == 0:
                tables = sorted(
                    row[0]
                    for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                )
                what = f"it has the tables {', '.join(tables)}" if tables else "it has no tables"
                raise LedgerError(
                    f"{self.path}: this SQLite file is not a newsletter ledger ({what}); "
                    "point the workspace at the right file or move this one away"
                )
            schema.migrate(conn, version)

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path}: this ledger was written by a newer newsletter (ledger schema "
                f"{version}; this version reads up to {SCHEMA_VERSION}); upgrade newsletter "
                "before sending with this workspace"
            )

    def close(self) -> None:
        """Close the file; SQLite then folds the write-ahead log back into it."""
        self._conn.close()

    def for_threads(self) -> Ledger:
        """A second connection to this file that worker threads may use, one at a time."""
        return Ledger(self.path, threads=True)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """Turn what SQLite reports about the file (damaged, locked, disk full) into a LedgerError.

        Errors that mean a bug in this module (a bad statement, a constraint) keep their traceback.
        """
        try:
            yield
        except sqlite3.Error as e:
            name = getattr(e, "sqlite_errorname", "")
            if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
                hint = (
                    "it is damaged or not a ledger; move it away and restore it from a backup "
                    "(a new, empty ledger forgets who was already mailed, so a rerun would mail "
                    "them again)"
                )
            elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
                hint = (
                    f"another process kept it locked for more than {BUSY_TIMEOUT_S:.0f} s; "
                    "wait for it to finish and run the command again"
                )
            elif name.startswith("SQLITE_FULL"):
                hint = "the disk is full; free some space and run the command again"
            elif name.startswith(
                ("SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_PERM")
            ):
                hint = "it cannot be read or written; check the path and its permissions"
            else:
                raise
            raise LedgerError(f"{self.path}: {hint} (SQLite: {e})") from e

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._conn)

    def start_send(self, manifest: Manifest) -> int:
        """Record that a send begins, with its manifest; returns the send id."""
        with self._translate(), self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO sends (issue, provider, started_at, status, manifest_json) "
                "VALUES (?, ?, ?, 'running', ?)",
                (
                    manifest.issue,
                    manifest.provider,
                    _now(),
                    json.dumps(dataclasses.asdict(manifest), sort_keys=True),
                ),
            )
        assert cursor.lastrowid is not None
        self._own_sends.add(cursor.lastrowid)
        return cursor.lastrowid

    def finish_send(self, send_id: int, *, status: str, counts: Mapping[str, int]) -> None:
        """Record how a send ended and how many recipients ended in each state."""
        with self._translate(), self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE sends SET finished_at = ?, status = ?, counts_json = ? WHERE id = ?",
                (_now(), status, json.dumps(dict(counts), sort_keys=True), send_id),
            )
            if cursor.rowcount != 1:
                raise LedgerError(f"{self.path}: there is no send {send_id} to finish")

    def recover(self, issue: str) -> int:
        """Mark what a killed process left ``pending`` as ``unknown``; returns how many recipients.

        Its request may or may not have reached the provider, so those recipients are not
        mailed again unless the user asks (``--retry-unknown``). Sends of the issue still marked
        ``running``, other than those started through this object, become ``interrupted``. Call
        it under ``send_lock``: a ``pending`` row of a send that is still running must not be
        touched.

        It also brings the issue's address index up to date, in one sorted pass: the send that
        follows looks its list up through it.
        """
        now = _now()
        with self._translate(), self._transaction() as conn:
            rows = conn.execute(
                "UPDATE deliveries SET status = 'unknown', error = ?, updated_at = ? "
                "WHERE batch_id IN (SELECT id FROM batches WHERE issue = ? AND status = 'pending') "
                "AND status = 'pending' AND current",
                (INTERRUPTED, now, issue),
            ).rowcount
            conn.execute(
                "UPDATE batches SET status = 'unknown', error = ?, updated_at = ? "
                "WHERE issue = ? AND status = 'pending'",
                (INTERRUPTED, now, issue),
            )
            own = sorted(self._own_sends)
            conn.execute(
                "UPDATE sends SET status = 'interrupted' "
                f"WHERE issue = ? AND status = 'running' AND id NOT IN ({_placeholders(len(own))})",
                (issue, *own),
            )
            self._index(conn, issue)
        return rows

    def _index(
        self, conn: sqlite3.Connection, issue: str, rehearsals: Sequence[bool] = (False, True)
    ) -> None:
        """Put the current rows of the issue's unindexed batches into `recipient_index`.

        Sorted by address first, so the index is written page by page, once: the same rows
        added batch by batch, in the list's order, would dirty a page per address.
        """
        for rehearsal in rehearsals:
            conn.execute(
                "INSERT INTO recipient_index (issue, rehearsal, key, batch_id) "
                "SELECT d.issue, d.rehearsal, d.key, d.batch_id FROM deliveries AS d "
                f"WHERE d.batch_id IN ({_UNINDEXED}) AND d.current "
                "ORDER BY d.key "
                "ON CONFLICT (issue, rehearsal, key) DO UPDATE SET batch_id = excluded.batch_id",
                (issue, rehearsal),
            )
            conn.execute(
                "UPDATE batches SET indexed = 1 WHERE issue = ? AND rehearsal = ? AND indexed = 0",
                (issue, rehearsal),
            )
            self._filtered.pop((issue, rehearsal), None)
            self._fingerprints.pop((issue, rehearsal), None)

    def _catch_up(self, conn: sqlite3.Connection, issue: str, rehearsal: bool) -> Fingerprints:
        """The fingerprints of the issue's unindexed rows, brought up to date.

        They are this connection's answer to "may this address have a row newer than the
        index?": a hash per such row, in memory. No means no; yes is checked against the rows
        themselves. A key index on disk written batch by batch is what made a list in random
        order cost twice a sorted one; the fingerprints cost 4 to 16 bytes per address sent
        since the issue's index was last brought up to date, and nothing on disk
        (`storage/fingerprints.py`). Rows other connections wrote (SMTP's marks, another
        process) are read by `seq`.
        """
        scope = (issue, bool(rehearsal))
        top = conn.execute("SELECT coalesce(max(seq), 0) FROM deliveries").fetchone()[0]
        seen = self._filtered.get(scope)
        prints = self._fingerprints.get(scope)
        if prints is not None and len(prints) > 2 * MAX_UNINDEXED:
            prints = None  # what another connection folded into the index is stale here
        if seen is None or prints is None:
            prints = self._fingerprints[scope] = Fingerprints()
            keys = conn.execute(
                f"SELECT key FROM deliveries WHERE batch_id IN ({_UNINDEXED}) AND seq <= ?",
                (issue, rehearsal, top),
            )
        elif seen < top:
            keys = conn.execute(
                "SELECT key FROM deliveries WHERE seq > ? AND seq <= ? AND issue = ? "
                "AND rehearsal = ?",
                (seen, top, issue, rehearsal),
            )
        else:
            keys = None
        if keys is not None:
            prints.add(hash(key) for (key,) in keys)
        self._filtered[scope] = top
        return prints

    def _current(
        self, conn: sqlite3.Connection, issue: str, rehearsal: bool, keys: Sequence[str]
    ) -> tuple[list[tuple[int, str, str]], list[int]]:
        """(batch id, key, status) of the current row of each key that has one; and the
        keys' hashes, for `_claim` to add to the fingerprints."""
        prints = self._catch_up(conn, issue, rehearsal)
        found = conn.execute(_INDEXED_OF_KEYS, (issue, rehearsal, json.dumps(keys))).fetchall()
        hashes = [hash(key) for key in keys]
        maybe = prints.hits(hashes)
        if maybe:
            newer = json.dumps([keys[i] for i in maybe])
            found += conn.execute(_UNINDEXED_OF_KEYS, (issue, rehearsal, newer)).fetchall()
        return found, hashes

    def _claim(
        self,
        conn: sqlite3.Connection,
        issue: str,
        rehearsal: bool,
        rows: Sequence[tuple[int, str, str]],
        now: str,
    ) -> None:
        """Add (batch id, key, email) rows as ``pending``, each its address's current row.

        The address's earlier row, if ``failed``, ``unknown`` or ``pending``, is taken over
        (it stays, no longer current). An address already ``sent`` or ``rejected`` raises
        LedgerError before anything is written.
        """
        found, hashes = self._current(conn, issue, rehearsal, [key for _b, key, _e in rows])
        done = sorted({(key, status) for _b, key, status in found if status in (SENT, REJECTED)})
        if done:
            shown = ", ".join(f"{k} ({s})" for k, s in done[:5])
            raise LedgerError(
                f"issue {issue}: {len(done)} recipient(s) already {SENT} or {REJECTED}, "
                f"refusing to mail them again: {shown}"
            )
        if found:
            conn.executemany(
                "UPDATE deliveries SET current = 0 WHERE batch_id = ? AND key = ?",
                [(batch_id, key) for batch_id, key, _status in found],
            )
        scope = (issue, rehearsal)
        top = self._filtered[scope]
        batches = sorted({b for b, _k, _e in rows})
        if len(batches) == 1 and all(
            key == email or (email.isascii() and email.lower() == key) for _b, key, email in rows
        ):
            emails = json.dumps([email for _b, _k, email in rows])
            conn.execute(_PENDING_OF_EMAILS, (issue, rehearsal, now, top, emails, batches[0]))
        else:
            conn.execute(_PENDING_OF_ROWS, (issue, rehearsal, now, top, json.dumps(rows)))
        prints = self._fingerprints[scope]
        prints.add(hashes)
        self._filtered[scope] = top + len(rows)
        conn.executemany(
            "UPDATE batches SET indexed = 0 WHERE id = ? AND indexed = 1",
            [(batch_id,) for batch_id in batches],
        )
        if len(prints) > MAX_UNINDEXED:
            # Memory stays bounded whatever the list's size: a long send folds its rows
            # into the index, sorted, every so often, and its fingerprints start afresh.
            self._index(conn, issue, (rehearsal,))

    def statuses(
        self, issue: str, keys: Sequence[str], *, rehearsal: bool = False
    ) -> dict[str, str]:
        """Status of each key that has a row; one query per 1000 keys, so a batch costs one.

        Real deliveries and rehearsals (the outbox) are looked up apart: a rehearsal is not
        a delivery.
        """
        result: dict[str, str] = {}
        if not keys:
            return result
        with self._translate(), self._reading() as conn:
            for chunk in _chunks(keys, MAX_KEYS_PER_QUERY):
                found, _hashes = self._current(conn, issue, rehearsal, chunk)
                result.update((key, status) for _batch, key, status in found)
        return result

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: several queries see the same state of the file."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def begin_batch(self, send_id: int, issue: str, recipients: Sequence[tuple[str, str]]) -> int:
        """Mark (key, email) recipients ``pending`` and commit, before their request goes out.

        Rows in ``failed``, ``unknown`` or ``pending`` are taken over (a retry). A key already
        ``sent`` or ``rejected``, or twice in the batch, raises LedgerError and nothing is written:
        the caller must have filtered them, and a second mail is never allowed.
        """
        if not recipients:
            raise ValueError("begin_batch needs at least one recipient")
        keys = [key for key, _email in recipients]
        if len(set(keys)) != len(keys):
            twice = sorted(k for k, n in Counter(keys).items() if n > 1)
            raise LedgerError(f"issue {issue}: {', '.join(twice[:5])} twice in one batch")
        now = _now()
        with self._translate():
            # The pending mark must survive a power cut as well as a killed process: the one
            # commit per batch that is fsynced. Everything else may lag behind (NORMAL).
            self._conn.execute("PRAGMA synchronous = FULL")
            try:
                with self._transaction() as conn:
                    batch_id, rehearsal = self._insert_batch(
                        conn, send_id, issue, len(recipients), now
                    )
                    self._claim(
                        conn,
                        issue,
                        rehearsal,
                        [(batch_id, key, email) for key, email in recipients],
                        now,
                    )
            finally:
                self._conn.execute("PRAGMA synchronous = NORMAL")
        return batch_id

    def open_batch(self, send_id: int, issue: str, size: int) -> int:
        """A batch whose recipients are marked one by one (`mark_messages`), as each message
        leaves: SMTP sends a batch's messages one after the other, so a process killed
        part-way leaves only the message in flight unknown, not the whole batch."""
        with self._translate(), self._transaction() as conn:
            batch_id, _rehearsal = self._insert_batch(conn, send_id, issue, size, _now())
            return batch_id

    def mark_messages(
        self,
        issue: str,
        pending: Sequence[tuple[int, str, str]],
        sent: Sequence[tuple[int, str, str]] = (),
    ) -> None:
        """Recipients of open batches about to be sent, (batch id, key, email), marked
        ``pending`` in one fsynced commit, as `begin_batch` does; and others already
        accepted, (batch id, key, provider id), marked ``sent`` in the same commit.

        Several connections share one commit this way (a group commit): an fsync per
        message would cap a send at one message per fsync. A key already ``sent`` or
        ``rejected`` raises LedgerError and nothing is written.
        """
        now = _now()
        with self._translate():
            self._conn.execute("PRAGMA synchronous = FULL")
            try:
                with self._transaction() as conn:
                    # One look-up per batch, not per message: a group holds a few batches.
                    kinds = {b: self._rehearsal(conn, b) for b in {row[0] for row in pending}}
                    by_kind: dict[bool, list[tuple[int, str, str]]] = {}
                    for row in pending:
                        by_kind.setdefault(kinds[row[0]], []).append(row)
                    for rehearsal, rows in by_kind.items():
                        self._claim(conn, issue, rehearsal, rows, now)
                    conn.executemany(
                        "UPDATE deliveries SET status = 'sent', provider_id = ?, updated_at = ? "
                        "WHERE batch_id = ? AND key = ? AND status = 'pending'",
                        [(p, now, b, k) for b, k, p in sent],
                    )
            finally:
                self._conn.execute("PRAGMA synchronous = NORMAL")

    def _rehearsal(self, conn: sqlite3.Connection, batch_id: int) -> bool:
        """Whether the batch belongs to a rehearsal (an outbox send)."""
        row = conn.execute("SELECT rehearsal FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None:
            raise LedgerError(f"{self.path}: batch {batch_id} does not exist")
        return bool(row[0])

    def _insert_batch(
        self, conn: sqlite3.Connection, send_id: int, issue: str, size: int, now: str
    ) -> tuple[int, bool]:
        """The new batch's id, and whether its send is a rehearsal (by its provider)."""
        row = conn.execute("SELECT issue, provider FROM sends WHERE id = ?", (send_id,)).fetchone()
        if row is None or row[0] != issue:
            raise LedgerError(f"{self.path}: send {send_id} is not a send of issue {issue}")
        rehearsal = is_rehearsal(row[1])
        cursor = conn.execute(
            "INSERT INTO batches (send_id, issue, status, size, created_at, updated_at, "
            "rehearsal, indexed) VALUES (?, ?, 'pending', ?, ?, ?, ?, 0)",
            (send_id, issue, size, now, now, rehearsal),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid, rehearsal

    def finish_batch(
        self,
        batch_id: int,
        status: str,
        *,
        provider_id: str | None = None,
        error: str | None = None,
        rejected: Mapping[str, str] | None = None,
        each: Mapping[str, tuple[str, str | None, str | None]] | None = None,
    ) -> None:
        """Record the provider's answer for a whole batch, in one transaction.

        ``status`` (sent, failed or unknown) applies to every recipient of the batch except the
        keys in ``rejected`` (key -> the provider's reason), which become ``rejected``, and the
        keys in ``each`` (key -> status, provider id, error): a batch of SMTP messages has an
        outcome per message. The batch's rows sit side by side, so this writes a few pages.
        """
        if status not in FINISHED_BATCH_STATUSES:
            raise ValueError(
                f"a batch finishes as one of {FINISHED_BATCH_STATUSES}, not {status!r}"
            )
        now = _now()
        with self._translate(), self._transaction() as conn:
            row = conn.execute("SELECT status FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None or row[0] != PENDING:
                state = "does not exist" if row is None else f"is already {row[0]}"
                raise LedgerError(f"{self.path}: batch {batch_id} {state}, cannot finish it")
            conn.execute(
                "UPDATE batches SET status = ?, provider_id = ?, error = ?, updated_at = ? "
                "WHERE id = ?",
                (status, provider_id, error, now, batch_id),
            )
            if rejected:
                changed = conn.executemany(
                    "UPDATE deliveries SET status = 'rejected', provider_id = ?, error = ?, "
                    "updated_at = ? WHERE batch_id = ? AND key = ? AND status = 'pending'",
                    [(provider_id, reason, now, batch_id, k) for k, reason in rejected.items()],
                ).rowcount
                if changed != len(rejected):
                    raise LedgerError(
                        f"{self.path}: batch {batch_id} was told of rejected recipients that "
                        "are not in it"
                    )
            if each:
                if any(s not in FINISHED_BATCH_STATUSES for s, _id, _error in each.values()):
                    raise ValueError(f"a recipient finishes as one of {FINISHED_BATCH_STATUSES}")
                # Keys of an open batch that never left have no row, and those already
                # marked sent are not pending: both are left as they are.
                conn.executemany(
                    "UPDATE deliveries SET status = ?, provider_id = ?, error = ?, "
                    "updated_at = ? WHERE batch_id = ? AND key = ? AND status = 'pending'",
                    [(s, p, e, now, batch_id, k) for k, (s, p, e) in each.items()],
                )
            conn.execute(
                "UPDATE deliveries SET status = ?, provider_id = ?, error = ?, updated_at = ? "
                "WHERE batch_id = ? AND status = 'pending'",
                (status, provider_id, error, now, batch_id),
            )

    def counts(self, issue: str, *, rehearsal: bool = False) -> Counter[str]:
        """Recipients of an issue per status: real deliveries, or the rehearsals."""
        with self._translate():
            rows = self._conn.execute(
                "SELECT d.status, count(*) FROM batches AS b JOIN deliveries AS d "
                "ON d.batch_id = b.id WHERE b.issue = ? AND b.rehearsal = ? AND d.current "
                "GROUP BY d.status",
                (issue, rehearsal),
            )
            return Counter(dict(rows.fetchall()))

    def deliveries(
        self, issue: str, status: str | None = None, *, rehearsal: bool = False
    ) -> Iterator[Delivery]:
        """Every recipient row of an issue (optionally one status), streamed in key order.

        Real deliveries, or with `rehearsal` the outbox's.

        Read a page at a time, with no query left open between pages, so the caller may write
        to the ledger while it iterates (retrying the failed ones, say). Rows newer than the
        address index are first copied, sorted, into a scratch table of this connection.
        """
        which = " AND d.status = ?" if status is not None else ""
        extra: tuple[str, ...] = (status,) if status is not None else ()
        with self._translate():
            unindexed = self._conn.execute(
                "SELECT 1 FROM batches WHERE issue = ? AND rehearsal = ? AND indexed = 0 LIMIT 1",
                (issue, rehearsal),
            ).fetchone()
        if unindexed is None:
            sql = (
                f"SELECT {_DELIVERY_COLUMNS} FROM recipient_index AS r JOIN deliveries AS d "
                "ON d.batch_id = r.batch_id AND d.key = r.key WHERE r.issue = ? "
                f"AND r.rehearsal = ? AND r.key > ? AND d.current{which} "
                f"ORDER BY r.key LIMIT {ROWS_PER_PAGE}"
            )
            last = ""
            while True:
                with self._translate():
                    rows = self._conn.execute(sql, (issue, rehearsal, last, *extra)).fetchall()
                yield from (_delivery(row) for row in rows)
                if len(rows) < ROWS_PER_PAGE:
                    return
                last = rows[-1][1]
        self._listings += 1
        table = f"temp.listing_{self._listings}"
        try:
            with self._translate():
                self._conn.execute(
                    f"CREATE TABLE {table} AS SELECT * FROM ("
                    f"SELECT {_DELIVERY_COLUMNS} FROM recipient_index AS r JOIN deliveries AS d "
                    "ON d.batch_id = r.batch_id AND d.key = r.key WHERE r.issue = ?1 "
                    f"AND r.rehearsal = ?2 AND d.current{which.replace('?', '?3')} UNION "
                    f"SELECT {_DELIVERY_COLUMNS} FROM deliveries AS d "
                    f"WHERE d.batch_id IN ({_UNINDEXED_12}) "
                    f"AND d.current{which.replace('?', '?3')}) ORDER BY key",
                    (issue, rehearsal, *extra),
                )
            after = 0
            while True:
                with self._translate():
                    rows = self._conn.execute(
                        f"SELECT rowid, * FROM {table} WHERE rowid > ? ORDER BY rowid "
                        f"LIMIT {ROWS_PER_PAGE}",
                        (after,),
                    ).fetchall()
                yield from (_delivery(row[1:]) for row in rows)
                if len(rows) < ROWS_PER_PAGE:
                    return
                after = rows[-1][0]
        finally:
            with self._translate():
                self._conn.execute(f"DROP TABLE IF EXISTS {table}")

    def sends(self, issue: str | None = None) -> list[SendRecord]:
        """Every send (of one issue, or of all), oldest first, with manifests and counts."""
        sql = (
            "SELECT id, issue, provider, started_at, finished_at, status, manifest_json, "
            "counts_json FROM sends"
        )
        params: tuple[str, ...] = ()
        if issue is not None:
            sql += " WHERE issue = ?"
            params = (issue,)
        with self._translate():
            rows = self._conn.execute(sql + " ORDER BY id", params).fetchall()
        return [
            SendRecord(
                id=row[0],
                issue=row[1],
                provider=row[2],
                started_at=row[3],
                finished_at=row[4],
                status=row[5],
                manifest=Manifest(**json.loads(row[6])),
                counts=json.loads(row[7]) if row[7] else {},
            )
            for row in rows
        ]

    def sent_per_send(self, issue: str) -> dict[int, int]:
        """Recipients of the issue now `sent`, by the send that mailed them (killed ones too)."""
        with self._translate():
            rows = self._conn.execute(
                "SELECT b.send_id, count(*) FROM batches AS b JOIN deliveries AS d "
                "ON d.batch_id = b.id WHERE b.issue = ? AND d.status = 'sent' AND d.current "
                "GROUP BY b.send_id",
                (issue,),
            )
            return dict(rows.fetchall())

    def sent_since(self, provider: str, since: datetime) -> list[float]:
        """When (epoch seconds) each recipient sent through `provider` after `since` was
        recorded, every issue: what a daily cap has already counted."""
        with self._translate():
            rows = self._conn.execute(
                "SELECT d.updated_at FROM deliveries AS d JOIN batches AS b ON d.batch_id = b.id "
                "JOIN sends AS s ON b.send_id = s.id WHERE s.provider = ? AND d.status = 'sent' "
                "AND d.updated_at > ?",
                (provider, since.isoformat(timespec="milliseconds")),
            )
            return [datetime.fromisoformat(row[0]).timestamp() for row in rows]

    def was_sent(self, issue: str) -> bool:
        """Whether any reader received the issue: the web archive publishes only sent issues.

        A rehearsal (the outbox) mailed nobody, so it does not count.
        """
        with self._translate():
            row = self._conn.execute(
                "SELECT 1 FROM batches AS b JOIN deliveries AS d ON d.batch_id = b.id "
                "WHERE b.issue = ? AND b.rehearsal = 0 AND d.status = 'sent' LIMIT 1",
                (issue,),
            ).fetchone()
        return row is not None

    def checkpoint(self) -> None:
        """Fold the write-ahead log back into the ledger file, so the file alone is whole.

        Run at the end of every send: a copy of `ledger.sqlite` made without its `-wal`
        then still holds every row. (Another reader may keep part of the log; `backup` is
        the copy that is always whole.)
        """
        with self._translate():
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    def backup(self, dest: Path) -> None:
        """A whole, consistent copy of the ledger at `dest`, with SQLite's online backup.

        Safe while a send runs: unlike copying the file, it includes what is still in the
        write-ahead log. Written beside `dest` first and renamed, and never over a file.
        """
        if dest.exists():
            raise LedgerError(f"{dest}: already exists; choose a new name for the backup")
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            target = sqlite3.connect(tmp)
            try:
                with self._translate():
                    self._conn.backup(target)
                target.execute("PRAGMA journal_mode = DELETE")
            finally:
                target.close()
            os.link(tmp, dest)
        except FileExistsError:
            raise LedgerError(f"{dest}: already exists; choose a new name for the backup") from None
        except (OSError, sqlite3.Error) as e:
            raise LedgerError(f"{dest}: cannot write the backup: {e}") from e
        finally:
            tmp.unlink(missing_ok=True)

    def record_bounces(self, issue: str, bounces: Sequence[tuple[str, str, str]]) -> None:
        """Keep (key, email, reason) hard bounces until they are on the suppression list.

        The ledger remembers them even when `suppressions.csv` cannot be written, so the
        next send can still add them (and skip them meanwhile).
        """
        now = _now()
        with self._translate(), self._transaction() as conn:
            conn.executemany(
                "INSERT INTO bounces (key, email, reason, issue, recorded_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                [(key, email, reason, issue, now) for key, email, reason in bounces],
            )

    def unsuppressed_bounces(self) -> list[tuple[str, str, str, str]]:
        """Hard bounces not yet written to the suppression list, as (key, email, reason,
        issue): the issue whose mail bounced goes with the suppression."""
        with self._translate():
            rows = self._conn.execute(
                "SELECT key, email, reason, issue FROM bounces WHERE suppressed_at IS NULL "
                "ORDER BY key"
            )
            return [(key, email, reason, issue) for key, email, reason, issue in rows]

    def bounces_suppressed(self, keys: Sequence[str]) -> None:
        """Mark hard bounces as written to the suppression list."""
        now = _now()
        with self._translate(), self._transaction() as conn:
            conn.executemany(
                "UPDATE bounces SET suppressed_at = ? WHERE key = ?",
                [(now, key) for key in keys],
            )

    # Sends held by the provider until a set time (`send --at`): see `storage.schedules`.

    def record_schedule(
        self, issue: str, send_id: int, provider: str, provider_batch: str, send_at: datetime
    ) -> int:
        """Record, before its first request, that send `send_id` is held by the provider until
        `send_at` under `provider_batch`: a send killed half-way can still be cancelled."""
        with self._translate(), self._transaction() as conn:
            conn.execute(SCHEDULES_SQL)
            cursor = conn.execute(
                "INSERT INTO schedules (issue, send_id, provider, provider_batch, send_at, "
                "status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    issue,
                    send_id,
                    provider,
                    provider_batch,
                    send_at.astimezone(UTC).isoformat(timespec="seconds"),
                    SCHEDULED,
                    _now(),
                ),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def schedules(self, issue: str) -> list[Schedule]:
        """The issue's scheduled sends, oldest first, each with the recipients it holds."""
        with self._translate():
            if not self._has_schedules():
                return []
            rows = self._conn.execute(
                "SELECT s.id, s.issue, s.send_id, s.provider, s.provider_batch, s.send_at, "
                "s.status, s.created_at, s.cancelled_at, CASE WHEN s.status = ? "
                "THEN s.cancelled ELSE (SELECT count(*) FROM deliveries AS d JOIN batches AS b "
                "ON d.batch_id = b.id WHERE b.send_id = s.send_id AND d.issue = s.issue "
                "AND d.rehearsal = 0 AND d.current = 1 AND d.status = 'sent') END "
                "FROM schedules AS s WHERE s.issue = ? ORDER BY s.id",
                (CANCELLED, issue),
            ).fetchall()
        return [
            Schedule(
                id=row[0],
                issue=row[1],
                send_id=row[2],
                provider=row[3],
                provider_batch=row[4],
                send_at=row[5],
                status=row[6],
                created_at=row[7],
                cancelled_at=row[8],
                recipients=row[9] or 0,
            )
            for row in rows
        ]

    def cancel_schedule(self, schedule_id: int, reason: str) -> int:
        """The provider cancelled the schedule: mark its send's recipients ``failed`` (not
        delivered: the next send mails them), with `reason`, in one transaction; returns
        how many. Those ``unknown`` or ``pending`` too: whatever reached the provider was
        under the cancelled batch id. ``rejected`` ones stay refused. Call it under
        ``send_lock``: a send of the issue must not be marking rows meanwhile."""
        now = _now()
        with self._translate(), self._transaction() as conn:
            row = conn.execute(
                "SELECT send_id, issue, status FROM schedules WHERE id = ?", (schedule_id,)
            ).fetchone()
            if row is None or row[2] != SCHEDULED:
                state = "does not exist" if row is None else f"is already {row[2]}"
                raise LedgerError(f"{self.path}: schedule {schedule_id} {state}")
            send_id, issue = row[0], row[1]
            batches = "SELECT id FROM batches WHERE send_id = ?"
            marked = conn.execute(
                "UPDATE deliveries SET status = 'failed', error = ?, updated_at = ? "
                f"WHERE issue = ? AND rehearsal = 0 AND current = 1 AND batch_id IN ({batches}) "
                "AND status IN ('sent', 'unknown', 'pending')",
                (reason, now, issue, send_id),
            ).rowcount
            conn.execute(
                "UPDATE batches SET status = 'failed', error = ?, updated_at = ? "
                "WHERE send_id = ? AND status != 'failed'",
                (reason, now, send_id),
            )
            conn.execute("UPDATE sends SET status = 'cancelled' WHERE id = ?", (send_id,))
            conn.execute(
                "UPDATE schedules SET status = ?, cancelled_at = ?, cancelled = ? WHERE id = ?",
                (CANCELLED, now, marked, schedule_id),
            )
        return marked

    def was_delivered(self, issue: str, now: datetime) -> bool:
        """Whether a reader has the issue by `now`: `was_sent`, less what a provider still
        holds for a later time (`send --at`), so the archive does not publish it early."""
        with self._translate():
            if not self._has_schedules():
                return self.was_sent(issue)
            row = self._conn.execute(
                "SELECT 1 FROM deliveries AS d JOIN batches AS b ON d.batch_id = b.id "
                "WHERE d.issue = ? AND d.status = 'sent' AND d.rehearsal = 0 AND d.current = 1 "
                "AND b.send_id NOT IN (SELECT send_id FROM schedules WHERE issue = ? "
                "AND status = ? AND send_at > ?) LIMIT 1",
                (issue, issue, SCHEDULED, now.astimezone(UTC).isoformat(timespec="seconds")),
            ).fetchone()
        return row is not None

    def _has_schedules(self) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schedules'"
        ).fetchone()
        return row is not None
