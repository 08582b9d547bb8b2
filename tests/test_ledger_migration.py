"""Schema 3: a ledger written by the previous version keeps every row, and the rows newer
than the address index are found by every connection, so nobody is mailed twice."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from newsletter.errors import LedgerError
from newsletter.storage import ledger as ledger_module
from newsletter.storage.ledger import SCHEMA_VERSION, Ledger, Manifest

DATA = Path(__file__).parent / "data"
FIRST, SECOND = "2025-08-01-first", "2025-09-01-second"
COLUMNS = "issue, rehearsal, key, email, status, batch_id, provider_id, error, updated_at"


def manifest(issue: str, provider: str = "sendgrid") -> Manifest:
    return Manifest(
        issue=issue,
        issue_path=f"issues/{issue}.yaml",
        issue_sha256="a" * 64,
        templates_sha256="b" * 64,
        list_path="subscribers.csv",
        list_sha256="c" * 64,
        provider=provider,
        tool_version="0.1.0",
    )


def rows_of_schema_2(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
        return conn.execute(f"SELECT {COLUMNS} FROM deliveries ORDER BY {COLUMNS}").fetchall()
    finally:
        conn.close()


def test_a_schema_2_ledger_keeps_every_row_and_its_status(tmp_path: Path) -> None:
    """tests/data/ledger-v2.sqlite was written by the schema-2 code (tests/data/ledger-v2.py
    says how): sent, rejected, failed then retried, unknown, SMTP's marks, a pending batch of
    a killed process, a rehearsal beside a delivery, and straße@ beside strasse@."""
    path = tmp_path / "ledger.sqlite"
    shutil.copy(DATA / "ledger-v2.sqlite", path)
    before = rows_of_schema_2(path)
    assert len(before) == 11

    with Ledger(path) as ledger:
        after = sorted(
            (d.issue, int(d.rehearsal), d.key, d.email, d.status, d.batch_id, d.provider_id,
             d.error, d.updated_at)
            for issue in (FIRST, SECOND)
            for rehearsal in (False, True)
            for d in ledger.deliveries(issue, rehearsal=rehearsal)
        )  # fmt: skip
        assert after == before
        assert ledger.counts(FIRST) == {"sent": 5, "rejected": 1, "unknown": 1}
        assert ledger.counts(FIRST, rehearsal=True) == {"sent": 1}
        assert ledger.statuses(FIRST, ["straße@example.org", "strasse@example.org"]) == {
            "straße@example.org": "sent",
            "strasse@example.org": "sent",
        }
        assert ledger.counts(SECOND) == {"sent": 1, "unknown": 1, "pending": 1}
        assert [s.provider for s in ledger.sends()] == ["outbox", "sendgrid", "smtp"]

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (3,)
    conn.close()


def test_after_the_migration_the_ledger_still_refuses_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    shutil.copy(DATA / "ledger-v2.sqlite", path)
    with Ledger(path) as ledger:
        assert ledger.recover(SECOND) == 1  # cy, left pending by the killed process
        assert ledger.statuses(SECOND, ["cy@example.org"]) == {"cy@example.org": "unknown"}
        send = ledger.start_send(manifest(FIRST))
        for key, status in [
            ("ann@example.org", "sent"),
            ("rex@example.org", "rejected"),
            ("fay@example.org", "sent"),
        ]:
            with pytest.raises(LedgerError, match=rf"{key} \({status}\)"):
                ledger.begin_batch(send, FIRST, [(key, key)])
        retry = ledger.begin_batch(send, FIRST, [("una@example.org", "una@example.org")])
        ledger.finish_batch(retry, "sent", provider_id="sg-3")
        assert ledger.counts(FIRST) == {"sent": 6, "rejected": 1}
        rehearsal = ledger.start_send(manifest(FIRST, "outbox"))
        with pytest.raises(LedgerError, match=r"ann@example\.org \(sent\)"):
            ledger.begin_batch(rehearsal, FIRST, [("ann@example.org", "ann@example.org")])


def test_rows_written_through_another_connection_are_seen_before_the_index_has_them(
    tmp_path: Path,
) -> None:
    """Two connections to one file, as SMTP's marks and the send have: what one marked sent
    is refused by the other, which had already looked the issue up."""
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as first, Ledger(path) as second:
        send = first.start_send(manifest(FIRST))
        assert second.statuses(FIRST, ["ann@example.org"]) == {}
        first.finish_batch(first.begin_batch(send, FIRST, [("ann@example.org", "Ann")]), "sent")
        assert second.statuses(FIRST, ["ann@example.org"]) == {"ann@example.org": "sent"}
        with pytest.raises(LedgerError, match=r"ann@example\.org \(sent\)"):
            second.begin_batch(send, FIRST, [("bob@example.org", "Bob"), ("ann@example.org", "A")])
        assert first.counts(FIRST) == {"sent": 1}


def test_a_retry_takes_over_the_failed_row_and_the_index_keeps_one_row_per_reader(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite"
    keys = [f"reader{i:04d}@example.org" for i in range(2500)]
    random.Random(13).shuffle(keys)  # a list in no order
    with Ledger(path) as ledger:
        send = ledger.start_send(manifest(FIRST))
        batches = [keys[i : i + 1000] for i in range(0, len(keys), 1000)]
        for n, batch in enumerate(batches):
            batch_id = ledger.begin_batch(send, FIRST, [(k, k) for k in batch])
            ledger.finish_batch(batch_id, "failed" if n == 1 else "sent", error=None)
        ledger.finish_batch(ledger.begin_batch(send, FIRST, [(k, k) for k in batches[1]]), "sent")
        assert ledger.counts(FIRST) == {"sent": 2500}
        listed = [d.key for d in ledger.deliveries(FIRST)]
        assert listed == sorted(keys)

    with Ledger(path) as ledger:  # a later send of the issue: its index is brought up to date
        ledger.recover(FIRST)
        assert [d.key for d in ledger.deliveries(FIRST, "sent")] == sorted(keys)
        assert ledger.counts(FIRST) == {"sent": 2500}
        assert set(ledger.statuses(FIRST, keys).values()) == {"sent"}
        send = ledger.start_send(manifest(FIRST))
        with pytest.raises(LedgerError, match="already sent"):
            ledger.begin_batch(send, FIRST, [(keys[1500], keys[1500])])
    conn = sqlite3.connect(path)
    indexed = conn.execute("SELECT count(*) FROM recipient_index").fetchone()[0]
    every = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    conn.close()
    assert (indexed, every) == (2500, 3500)  # the failed attempts stay, as history


def test_a_long_send_folds_its_rows_into_the_index_and_still_mails_nobody_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_UNINDEXED addresses a send brings the index up to date itself, so its
    fingerprints in memory stay bounded; lookups then go through the index."""
    monkeypatch.setattr(ledger_module, "MAX_UNINDEXED", 250)
    path = tmp_path / "ledger.sqlite"
    keys = [f"r{i:04d}@example.org" for i in range(1000)]
    random.Random(5).shuffle(keys)
    with Ledger(path) as ledger:
        send = ledger.start_send(manifest(FIRST))
        for start in range(0, 900, 100):
            batch = ledger.begin_batch(send, FIRST, [(k, k) for k in keys[start : start + 100]])
            ledger.finish_batch(batch, "failed" if start == 800 else "sent", error=None)
        assert all(len(prints) <= 250 for prints in ledger._fingerprints.values())
        with sqlite3.connect(path) as conn:
            indexed = conn.execute("SELECT count(*) FROM recipient_index").fetchone()[0]
        assert indexed >= 750  # folded in three times on the way

        assert ledger.statuses(FIRST, keys[:900]) == {
            **dict.fromkeys(keys[:800], "sent"),
            **dict.fromkeys(keys[800:900], "failed"),
        }
        with pytest.raises(LedgerError, match="refusing to mail them again"):
            ledger.begin_batch(send, FIRST, [(k, k) for k in (keys[950], keys[5])])
        retry = ledger.begin_batch(send, FIRST, [(k, k) for k in keys[800:]])  # takes over
        ledger.finish_batch(retry, "sent")
    with Ledger(path) as other:  # another connection, as the next send
        assert other.statuses(FIRST, keys) == dict.fromkeys(keys, "sent")
        assert other.counts(FIRST) == {"sent": 1000}


def test_a_connection_that_only_reads_starts_afresh_once_the_writer_has_folded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SMTP's marks claim through one connection while the send looks its list up through
    another: the reader's fingerprints must not grow with the whole send."""
    monkeypatch.setattr(ledger_module, "MAX_UNINDEXED", 100)
    path = tmp_path / "ledger.sqlite"
    keys = [f"r{i:04d}@example.org" for i in range(1500)]
    with Ledger(path) as reader, Ledger(path) as writer:
        send = writer.start_send(manifest(FIRST, provider="smtp"))
        for start in range(0, len(keys), 50):
            chunk = keys[start : start + 50]
            assert reader.statuses(FIRST, chunk) == {}
            writer.finish_batch(writer.begin_batch(send, FIRST, [(k, k) for k in chunk]), "sent")
            assert reader.statuses(FIRST, chunk) == dict.fromkeys(chunk, "sent")
            assert all(len(prints) <= 2 * 100 + 50 for prints in reader._fingerprints.values())
        assert reader.statuses(FIRST, keys) == dict.fromkeys(keys, "sent")
