"""The ledger's tables, and the migrations from every older schema, in SQL.

Kept apart from `ledger.py` so that file reads as the state machine; this one is what a
backup, a migration or another backend has to reproduce.

Schema 3 (this one) keeps a row per recipient *and batch*, clustered by batch: marking a batch
pending, and then settled, writes a few neighbouring pages whatever the order of the list.
Schema 2 kept one row per recipient keyed by address, and a batch of 1,000 addresses in random
order dirtied about 1,000 pages of that key (docs/benchmarks.md). The lookup by address now
goes through `recipient_index`, which is brought up to date at the start of each send of the
issue (under its send lock, sorted, in one pass); rows newer than the index are found through
their batch (see `Ledger` for how a connection finds them without a key index).
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 3

#: Providers whose deliveries are rehearsals: mail nobody reads. The outbox writes a Maildir
#: for the editor to look at; it must not count as a delivery for a real provider, nor
#: publish the issue in the archive. Rehearsal rows live beside the real ones, keyed apart.
REHEARSAL_PROVIDERS = frozenset({"outbox"})

PENDING = "pending"
SENT = "sent"
UNKNOWN = "unknown"
FAILED = "failed"
REJECTED = "rejected"
STATUSES = (PENDING, SENT, UNKNOWN, FAILED, REJECTED)

_REHEARSAL_SQL = ",".join(f"'{p}'" for p in sorted(REHEARSAL_PROVIDERS))

_SENDS = """
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
CREATE INDEX IF NOT EXISTS sends_issue ON sends(issue)
"""

_BOUNCES = """
CREATE TABLE IF NOT EXISTS bounces (
    key           TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    issue         TEXT NOT NULL,
    recorded_at   TEXT NOT NULL,
    suppressed_at TEXT
)
"""

# `deliveries`: one row per recipient and batch. A retry adds a row in the new batch and
# clears `current` on the row it takes over, so `current` rows are each recipient's state.
# `seq` numbers rows in the order they were written, so a connection can tell what others
# wrote since it last looked. `recipient_index` maps an address to the batch of its current
# row, for the rows of batches with `indexed` set.
_DELIVERIES = f"""
CREATE TABLE IF NOT EXISTS deliveries (
    batch_id    INTEGER NOT NULL REFERENCES batches(id),
    key         TEXT NOT NULL,
    issue       TEXT NOT NULL,
    rehearsal   INTEGER NOT NULL DEFAULT 0,
    email       TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN {STATUSES!r}),
    provider_id TEXT,
    error       TEXT,
    updated_at  TEXT NOT NULL,
    current     INTEGER NOT NULL DEFAULT 1,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (batch_id, key)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_seq ON deliveries(seq);
CREATE TABLE IF NOT EXISTS recipient_index (
    issue     TEXT NOT NULL,
    rehearsal INTEGER NOT NULL,
    key       TEXT NOT NULL,
    batch_id  INTEGER NOT NULL,
    PRIMARY KEY (issue, rehearsal, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batches_unindexed ON batches(issue, rehearsal) WHERE indexed = 0
"""

SCHEMA = f"""
{_SENDS};
CREATE TABLE IF NOT EXISTS batches (
    id          INTEGER PRIMARY KEY,
    send_id     INTEGER NOT NULL REFERENCES sends(id),
    issue       TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'unknown')),
    size        INTEGER NOT NULL,
    provider_id TEXT,
    error       TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    rehearsal   INTEGER NOT NULL DEFAULT 0,
    indexed     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batches_issue_status ON batches(issue, status);
{_DELIVERIES};
{_BOUNCES}
"""
TABLES = frozenset({"sends", "batches", "deliveries", "recipient_index", "bounces"})

# Schema 1 -> 2: deliveries keyed by (issue, rehearsal, key), rehearsal taken from the
# provider of the send that made each row; and the bounces table. SQLite cannot change a
# primary key in place, so the table is copied.
_MIGRATE_1_TO_2 = f"""
CREATE TABLE deliveries_2 (
    issue       TEXT NOT NULL,
    key         TEXT NOT NULL,
    email       TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN {STATUSES!r}),
    batch_id    INTEGER NOT NULL REFERENCES batches(id),
    provider_id TEXT,
    error       TEXT,
    updated_at  TEXT NOT NULL,
    rehearsal   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (issue, rehearsal, key)
);
INSERT INTO deliveries_2
SELECT d.issue, d.key, d.email, d.status, d.batch_id, d.provider_id, d.error, d.updated_at,
       s.provider IN ({_REHEARSAL_SQL})
FROM deliveries AS d JOIN batches AS b ON d.batch_id = b.id JOIN sends AS s ON b.send_id = s.id;
DROP TABLE deliveries;
ALTER TABLE deliveries_2 RENAME TO deliveries;
CREATE INDEX deliveries_batch ON deliveries(batch_id);
{_BOUNCES}
"""

# Schema 2 -> 3: each schema-2 row becomes the current row of its batch, and the index of
# addresses is built from them in one sorted pass. Batches learn whether they are rehearsals.
_MIGRATE_2_TO_3 = f"""
ALTER TABLE batches ADD COLUMN rehearsal INTEGER NOT NULL DEFAULT 0;
UPDATE batches SET rehearsal = (
    SELECT s.provider IN ({_REHEARSAL_SQL}) FROM sends AS s WHERE s.id = batches.send_id
);
ALTER TABLE batches ADD COLUMN indexed INTEGER NOT NULL DEFAULT 0;
UPDATE batches SET indexed = 1;
ALTER TABLE deliveries RENAME TO deliveries_2;
DROP INDEX deliveries_batch;
{_DELIVERIES};
INSERT INTO deliveries (batch_id, key, issue, rehearsal, email, status, provider_id, error,
                        updated_at, current, seq)
SELECT batch_id, key, issue, rehearsal, email, status, provider_id, error, updated_at, 1,
       row_number() OVER (ORDER BY batch_id, key)
FROM deliveries_2 ORDER BY batch_id, key;
INSERT INTO recipient_index (issue, rehearsal, key, batch_id)
SELECT issue, rehearsal, key, batch_id FROM deliveries_2 ORDER BY issue, rehearsal, key;
DROP TABLE deliveries_2
"""

MIGRATIONS = {1: _MIGRATE_1_TO_2, 2: _MIGRATE_2_TO_3}


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Each statement of `script`, inside the caller's transaction (executescript commits)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def create(conn: sqlite3.Connection) -> None:
    """Every table of the current schema, in the caller's transaction."""
    run_script(conn, SCHEMA)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a ledger of an older schema up to this one, in the caller's transaction."""
    while version < SCHEMA_VERSION:
        run_script(conn, MIGRATIONS[version])
        version += 1
        conn.execute(f"PRAGMA user_version = {version}")
