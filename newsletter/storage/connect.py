"""How the workspace's SQLite files are opened: the settings the ledger and the store share.

Write-ahead logging lets readers (`status`, the reader service) run while a send writes;
`synchronous = NORMAL` fsyncs at checkpoints, not at every commit (the ledger asks for FULL
on the one commit per batch that must survive a power cut); a writer waits up to
`BUSY_TIMEOUT_S` for another instead of failing; and every transaction is opened by hand,
with BEGIN IMMEDIATE (`immediate`), so that waiting happens at its start.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Waiting for another writer (a send of another issue, the reader service) beats failing.
BUSY_TIMEOUT_S = 30.0


def connect(path: Path, *, threads: bool = False) -> sqlite3.Connection:
    """A connection to `path` with no implicit transactions.

    `threads`: it may be used from other threads than this one (one at a time).
    """
    return sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=not threads
    )


def configure(conn: sqlite3.Connection) -> None:
    """The settings every workspace file is used with (see the module's docstring)."""
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction; IMMEDIATE so that waiting for another writer uses busy_timeout.
    The ledger and the store both write through it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        # SQLite may have rolled back already (disk full, I/O error): keep the first error.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
