"""The ledger's record of sends a provider holds until a set time (`send --at`).

One row per send handed over with a time: the provider's batch id (what cancels it), the
time, and whether it was cancelled. Its recipients are the send's own deliveries
(`deliveries.batch_id` -> `batches.send_id`), so nothing is copied. The table is made
with `CREATE TABLE IF NOT EXISTS` by the first scheduled send: a ledger written before
it existed needs no migration, and a version that does not know it ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULED = "scheduled"
CANCELLED = "cancelled"

SCHEDULES_SQL = """
CREATE TABLE IF NOT EXISTS schedules (
    id             INTEGER PRIMARY KEY,
    issue          TEXT NOT NULL,
    send_id        INTEGER NOT NULL REFERENCES sends(id),
    provider       TEXT NOT NULL,
    provider_batch TEXT NOT NULL,
    send_at        TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('scheduled', 'cancelled')),
    created_at     TEXT NOT NULL,
    cancelled_at   TEXT,
    cancelled      INTEGER
)
"""


@dataclass(frozen=True)
class Schedule:
    """A send held by its provider until `send_at` (ISO 8601, UTC)."""

    id: int
    issue: str
    send_id: int
    provider: str
    provider_batch: str
    send_at: str
    status: str
    created_at: str
    #: Recipients it holds: those of the send still `sent` (while scheduled), or those the
    #: cancellation marked not sent.
    recipients: int
    cancelled_at: str | None = None
