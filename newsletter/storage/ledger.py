"""The ledger: who was mailed which issue, so a crash or a rerun never mails anyone twice.

One SQLite file in the workspace (``.newsletter/ledger.sqlite``). Each recipient of an issue
has one row in ``deliveries`` whose status moves like this::

    (none) -> pending -> sent       the provider accepted it: never sent again
                      -> rejected   refused for good (SMTP 550): never sent again
                      -> failed     provably not delivered: sent again on a rerun
                      -> unknown    no answer came back: sent again only with --retry-unknown

A batch is marked ``pending`` and committed before its request goes out; a process killed
mid-request leaves it ``pending``, and ``recover`` turns that into ``unknown`` at the start of
the next send. ``sends`` keeps, per send, a manifest of what was sent (hashes of the issue, the
templates and the list) and the final counts: the audit record.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from newsletter.errors import LedgerError

SCHEMA_VERSION = 1

PENDING = "pending"
SENT = "sent"
UNKNOWN = "unknown"
FAILED = "failed"
REJECTED = "rejected"
STATUSES = (PENDING, SENT, UNKNOWN, FAILED, REJECTED)
FINISHED_BATCH_STATUSES = (SENT, FAILED, UNKNOWN)

# Waiting for another writer (a send of another issue) beats failing a send half-way.
BUSY_TIMEOUT_S = 30.0
# Keys per IN (...) query: a full batch in one statement, far below SQLite's variable limit.
MAX_KEYS_PER_QUERY = 1000
# Rows per query when streaming deliveries: constant memory, and no query held open.
ROWS_PER_PAGE = 1000
INTERRUPTED = "interrupted: the process stopped before the provider answered"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS sends (
    id            INTEGER PRIMARY KEY,
    issue         TEXT NOT NULL,
    provider      TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    status        TEXT NOT NULL,
    manifest_json TEXT NOT NULL,
    counts_json   TEXT
);
CREATE INDEX IF NOT EXISTS sends_issue ON sends(issue);
CREATE TABLE IF NOT EXISTS batches (
    id          INTEGER PRIMARY KEY,
    send_id     INTEGER NOT NULL REFERENCES sends(id),
    issue       TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'unknown')),
    size        INTEGER NOT NULL,
    provider_id TEXT,
    error       TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_issue_status ON batches(issue, status);
CREATE TABLE IF NOT EXISTS deliveries (
    issue       TEXT NOT NULL,
    key         TEXT NOT NULL,
    email       TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN {STATUSES!r}),
    batch_id    INTEGER NOT NULL REFERENCES batches(id),
    provider_id TEXT,
    error       TEXT,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (issue, key)
);
CREATE INDEX IF NOT EXISTS deliveries_batch ON deliveries(batch_id);
"""
_TABLES = {"sends", "batches", "deliveries"}

# One statement for the whole batch, its rows unpacked by SQLite from a JSON array: a
# statement per row spent more time crossing between Python and SQLite than inserting.
_UPSERT_PENDING = """
INSERT INTO deliveries (issue, key, email, status, batch_id, updated_at)
SELECT ?, json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), 'pending', ?, ?
FROM json_each(?) AS j WHERE true
ON CONFLICT (issue, key) DO UPDATE SET
    email = excluded.email, status = 'pending', batch_id = excluded.batch_id,
    provider_id = NULL, error = NULL, updated_at = excluded.updated_at
WHERE deliveries.status NOT IN ('sent', 'rejected')
"""


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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


class Ledger:
    """The send record of every issue, in one SQLite file; use it as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._own_sends: set[int] = set()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LedgerError(f"{path}: cannot create the ledger's folder: {e.strerror}") from e
        with self._translate():
            # isolation_level=None: we open every transaction ourselves, with BEGIN IMMEDIATE.
            self._conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            with self._translate():
                self._open()
        except BaseException:
            self._conn.close()
            raise

    def _open(self) -> None:
        conn = self._conn
        # The first read is where SQLite notices a file that is not a database.
        self._check_version(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        # An 8 MB page cache keeps memory flat: 64 MB grew a million-row send by 50 MB and was
        # no faster (bench/send.py). A batch of keys in random order dirties about one index
        # page per recipient; a larger WAL folds those writes into fewer checkpoints.
        conn.execute("PRAGMA cache_size = -8192")
        conn.execute("PRAGMA wal_autocheckpoint = 10000")
        with self._transaction():
            # Again inside the lock: another process may have created the schema meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version)
            if version == 0:
                tables = {
                    row[0]
                    for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                }
                if tables - _TABLES:
                    raise LedgerError(
                        f"{self.path}: this SQLite file is not a newsletter ledger "
                        f"(it has the tables {', '.join(sorted(tables - _TABLES))}); "
                        "point the workspace at the right file or move this one away"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE so that waiting for another writer uses busy_timeout."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            # SQLite may have rolled back already (disk full, I/O error): keep the first error.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

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
        """
        now = _now()
        with self._translate(), self._transaction() as conn:
            rows = conn.execute(
                "UPDATE deliveries SET status = 'unknown', error = ?, updated_at = ? "
                "WHERE issue = ? AND status = 'pending'",
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
        return rows

    def statuses(self, issue: str, keys: Sequence[str]) -> dict[str, str]:
        """Status of each key that has a row; one query per 1000 keys, so a batch costs one."""
        result: dict[str, str] = {}
        with self._translate():
            for chunk in _chunks(keys, MAX_KEYS_PER_QUERY):
                rows = self._conn.execute(
                    "SELECT key, status FROM deliveries "
                    f"WHERE issue = ? AND key IN ({_placeholders(len(chunk))})",
                    (issue, *chunk),
                )
                result.update(rows)
        return result

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
                    batch_id = self._insert_batch(conn, send_id, issue, len(recipients), now)
                    pairs = json.dumps([[key, email] for key, email in recipients])
                    changed = conn.execute(_UPSERT_PENDING, (issue, batch_id, now, pairs)).rowcount
                    if changed != len(recipients):
                        done = {
                            key: status
                            for key, status in self.statuses(issue, keys).items()
                            if status in (SENT, REJECTED)
                        }
                        shown = ", ".join(f"{k} ({s})" for k, s in sorted(done.items())[:5])
                        raise LedgerError(
                            f"issue {issue}: {len(done)} recipient(s) already {SENT} or "
                            f"{REJECTED}, refusing to mail them again: {shown}"
                        )
            finally:
                self._conn.execute("PRAGMA synchronous = NORMAL")
        return batch_id

    def _insert_batch(
        self, conn: sqlite3.Connection, send_id: int, issue: str, size: int, now: str
    ) -> int:
        row = conn.execute("SELECT issue FROM sends WHERE id = ?", (send_id,)).fetchone()
        if row is None or row[0] != issue:
            raise LedgerError(f"{self.path}: send {send_id} is not a send of issue {issue}")
        cursor = conn.execute(
            "INSERT INTO batches (send_id, issue, status, size, created_at, updated_at) "
            "VALUES (?, ?, 'pending', ?, ?, ?)",
            (send_id, issue, size, now, now),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def finish_batch(
        self,
        batch_id: int,
        status: str,
        *,
        provider_id: str | None = None,
        error: str | None = None,
        rejected: Mapping[str, str] | None = None,
    ) -> None:
        """Record the provider's answer for a whole batch, in one transaction.

        ``status`` (sent, failed or unknown) applies to every recipient of the batch except the
        keys in ``rejected`` (key -> the provider's reason), which become ``rejected``.
        """
        if status not in FINISHED_BATCH_STATUSES:
            raise ValueError(
                f"a batch finishes as one of {FINISHED_BATCH_STATUSES}, not {status!r}"
            )
        now = _now()
        with self._translate(), self._transaction() as conn:
            row = conn.execute(
                "SELECT issue, status FROM batches WHERE id = ?", (batch_id,)
            ).fetchone()
            if row is None or row[1] != PENDING:
                state = "does not exist" if row is None else f"is already {row[1]}"
                raise LedgerError(f"{self.path}: batch {batch_id} {state}, cannot finish it")
            issue = row[0]
            conn.execute(
                "UPDATE batches SET status = ?, provider_id = ?, error = ?, updated_at = ? "
                "WHERE id = ?",
                (status, provider_id, error, now, batch_id),
            )
            if rejected:
                changed = conn.executemany(
                    "UPDATE deliveries SET status = 'rejected', provider_id = ?, error = ?, "
                    "updated_at = ? WHERE issue = ? AND key = ? AND batch_id = ? "
                    "AND status = 'pending'",
                    [
                        (provider_id, reason, now, issue, k, batch_id)
                        for k, reason in rejected.items()
                    ],
                ).rowcount
                if changed != len(rejected):
                    raise LedgerError(
                        f"{self.path}: batch {batch_id} was told of rejected recipients that "
                        "are not in it"
                    )
            conn.execute(
                "UPDATE deliveries SET status = ?, provider_id = ?, error = ?, updated_at = ? "
                "WHERE batch_id = ? AND status = 'pending'",
                (status, provider_id, error, now, batch_id),
            )

    def counts(self, issue: str) -> Counter[str]:
        """Recipients of an issue per status."""
        with self._translate():
            rows = self._conn.execute(
                "SELECT status, count(*) FROM deliveries WHERE issue = ? GROUP BY status",
                (issue,),
            )
            return Counter(dict(rows.fetchall()))

    def deliveries(self, issue: str, status: str | None = None) -> Iterator[Delivery]:
        """Every recipient row of an issue (optionally one status), streamed in key order.

        Read a page at a time, with no query left open between pages, so the caller may write
        to the ledger while it iterates (retrying the failed ones, say).
        """
        sql = (
            "SELECT issue, key, email, status, batch_id, provider_id, error, updated_at "
            "FROM deliveries WHERE issue = ?"
        )
        params: tuple[str, ...] = (issue,)
        if status is not None:
            sql += " AND status = ?"
            params += (status,)
        page = f" ORDER BY key LIMIT {ROWS_PER_PAGE}"
        with self._translate():
            rows = self._conn.execute(sql + page, params).fetchall()
        while rows:
            for row in rows:
                yield Delivery(*row)
            if len(rows) < ROWS_PER_PAGE:
                return
            with self._translate():
                rows = self._conn.execute(
                    sql + " AND key > ?" + page, (*params, rows[-1][1])
                ).fetchall()

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
                "SELECT b.send_id, count(*) FROM deliveries AS d JOIN batches AS b "
                "ON d.batch_id = b.id WHERE d.issue = ? AND d.status = 'sent' GROUP BY b.send_id",
                (issue,),
            )
            return dict(rows.fetchall())

    def was_sent(self, issue: str) -> bool:
        """Whether anyone received the issue: the web archive publishes only sent issues."""
        with self._translate():
            row = self._conn.execute(
                "SELECT 1 FROM deliveries WHERE issue = ? AND status = 'sent' LIMIT 1", (issue,)
            ).fetchone()
        return row is not None
