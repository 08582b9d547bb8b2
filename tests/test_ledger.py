"""The ledger, on real SQLite files: what makes a crash or a rerun never mail anyone twice."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import newsletter
from newsletter.delivery.manifest import sha256_file, sha256_tree
from newsletter.errors import LedgerError
from newsletter.storage.ledger import SCHEMA_VERSION, Ledger, Manifest
from newsletter.storage.lock import send_lock

ISSUE = "2025-08-01-north-korea"
# Child processes import this checkout of the package, installed or not.
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(newsletter.__file__).parents[1]), os.environ.get("PYTHONPATH")])
    ),
}


def manifest(issue: str = ISSUE, **changes: object) -> Manifest:
    fields: dict[str, object] = {
        "issue": issue,
        "issue_path": f"issues/{issue}.yaml",
        "issue_sha256": "a" * 64,
        "templates_sha256": "b" * 64,
        "list_path": "subscribers.csv",
        "list_sha256": "c" * 64,
        "provider": "smtp",
        "tool_version": "0.1.0",
    }
    fields.update(changes)
    return Manifest(**fields)  # type: ignore[arg-type]


def people(*names: str) -> list[tuple[str, str]]:
    """(key, email) pairs: the key is the casefolded address, the email as written."""
    return [(f"{n}@example.org".casefold(), f"{n}@example.org") for n in names]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / ".newsletter" / "ledger.sqlite"


@pytest.fixture
def ledger(path: Path) -> Iterator[Ledger]:
    with Ledger(path) as ledger:
        yield ledger


def test_a_batch_begun_and_finished_reads_back(ledger: Ledger, path: Path) -> None:
    send = ledger.start_send(manifest())
    batch = ledger.begin_batch(send, ISSUE, people("Ann", "bob"))

    assert ledger.statuses(ISSUE, ["ann@example.org", "bob@example.org"]) == {
        "ann@example.org": "pending",
        "bob@example.org": "pending",
    }
    ledger.finish_batch(batch, "sent", provider_id="msg-1")

    rows = list(ledger.deliveries(ISSUE))
    assert [(d.key, d.email, d.status, d.batch_id, d.provider_id) for d in rows] == [
        ("ann@example.org", "Ann@example.org", "sent", batch, "msg-1"),
        ("bob@example.org", "bob@example.org", "sent", batch, "msg-1"),
    ]
    assert rows[0].updated_at.endswith("+00:00")
    assert ledger.counts(ISSUE) == {"sent": 2}
    assert ledger.was_sent(ISSUE)
    assert path.parent.is_dir()


def test_statuses_across_states_and_only_for_keys_with_a_row(ledger: Ledger) -> None:
    send = ledger.start_send(manifest())
    for name, status in [("s", "sent"), ("f", "failed"), ("u", "unknown")]:
        ledger.finish_batch(ledger.begin_batch(send, ISSUE, people(name)), status)
    ledger.finish_batch(
        ledger.begin_batch(send, ISSUE, people("r", "s2")),
        "sent",
        rejected={"r@example.org": "550"},
    )
    ledger.begin_batch(send, ISSUE, people("p"))

    keys = [f"{n}@example.org" for n in ["s", "f", "u", "r", "s2", "p", "never"]]
    assert ledger.statuses(ISSUE, keys) == {
        "s@example.org": "sent",
        "f@example.org": "failed",
        "u@example.org": "unknown",
        "r@example.org": "rejected",
        "s2@example.org": "sent",
        "p@example.org": "pending",
    }
    assert ledger.statuses("another-issue", keys) == {}
    assert ledger.counts(ISSUE) == {
        "sent": 2,
        "failed": 1,
        "unknown": 1,
        "rejected": 1,
        "pending": 1,
    }
    assert [d.key for d in ledger.deliveries(ISSUE, "failed")] == ["f@example.org"]


def test_statuses_and_deliveries_over_more_keys_than_one_query_holds(ledger: Ledger) -> None:
    send = ledger.start_send(manifest())
    everyone = people(*(f"p{i:04}" for i in range(2500)))
    for start in range(0, 2500, 1000):
        ledger.finish_batch(
            ledger.begin_batch(send, ISSUE, everyone[start : start + 1000]), "failed"
        )

    found = ledger.statuses(ISSUE, [key for key, _ in everyone])
    assert len(found) == 2500
    assert set(found.values()) == {"failed"}

    # Streamed page by page, while the rows read so far are retried (written) meanwhile.
    seen: list[str] = []
    for delivery in ledger.deliveries(ISSUE, "failed"):
        seen.append(delivery.key)
        if len(seen) % 700 == 0:
            retry = [(key, key) for key in seen[-700:]]
            ledger.finish_batch(ledger.begin_batch(send, ISSUE, retry), "sent")
    assert seen == sorted(key for key, _ in everyone)
    assert ledger.counts(ISSUE) == {"sent": 2100, "failed": 400}


def test_failed_unknown_and_pending_rows_are_taken_over_by_a_retry(ledger: Ledger) -> None:
    send = ledger.start_send(manifest())
    ledger.finish_batch(ledger.begin_batch(send, ISSUE, people("f")), "failed", error="timeout")
    ledger.finish_batch(ledger.begin_batch(send, ISSUE, people("u")), "unknown")
    ledger.begin_batch(send, ISSUE, people("p"))

    retry = ledger.begin_batch(send, ISSUE, [*people("u", "p"), ("f@example.org", "F@Example.org")])

    # While the retry is out, its rows say so, and nothing stale from the earlier attempt.
    assert {(d.status, d.batch_id, d.error) for d in ledger.deliveries(ISSUE)} == {
        ("pending", retry, None)
    }
    ledger.finish_batch(retry, "sent", provider_id="msg-2")
    assert [d.email for d in ledger.deliveries(ISSUE)] == [
        "F@Example.org",
        "p@example.org",
        "u@example.org",
    ]

    rows = list(ledger.deliveries(ISSUE))
    assert {(d.status, d.batch_id, d.provider_id, d.error) for d in rows} == {
        ("sent", retry, "msg-2", None)
    }


def test_addresses_are_kept_as_written_under_their_lowercase_key(ledger: Ledger) -> None:
    """Keys are Python's lowercase; SQLite's lower() knows only ASCII, so an address with a
    capital beyond ASCII must not be keyed by it."""
    send = ledger.start_send(manifest())
    written = ["Ünal@Example.org", "ANN@Example.org", "zoe@example.org"]
    batch = ledger.begin_batch(send, ISSUE, [(email.lower(), email) for email in written])
    ledger.finish_batch(batch, "sent", provider_id="msg-1")

    keys = ["ünal@example.org", "ann@example.org", "zoe@example.org"]
    assert ledger.statuses(ISSUE, keys) == dict.fromkeys(keys, "sent")
    assert sorted((d.key, d.email) for d in ledger.deliveries(ISSUE)) == sorted(
        zip(keys, written, strict=True)
    )
    with pytest.raises(LedgerError, match=r"ünal@example\.org \(sent\)"):
        ledger.begin_batch(send, ISSUE, [("ünal@example.org", "ünal@example.org")])


def test_begin_batch_refuses_a_sent_or_rejected_key_and_writes_nothing(ledger: Ledger) -> None:
    send = ledger.start_send(manifest())
    ledger.finish_batch(
        ledger.begin_batch(send, ISSUE, people("ann", "rex")),
        "sent",
        rejected={"rex@example.org": "550 no such user"},
    )

    with pytest.raises(LedgerError, match=r"ann@example\.org \(sent\)"):
        ledger.begin_batch(send, ISSUE, people("new", "ann"))
    with pytest.raises(LedgerError, match=r"rex@example\.org \(rejected\)"):
        ledger.begin_batch(send, ISSUE, people("rex"))

    # The refused batch left no trace: "new" was not marked pending, "ann" is still sent.
    assert ledger.statuses(ISSUE, ["new@example.org", "ann@example.org"]) == {
        "ann@example.org": "sent"
    }
    assert len(list(ledger.deliveries(ISSUE))) == 2


def test_begin_batch_refuses_a_key_twice_in_one_batch(ledger: Ledger) -> None:
    send = ledger.start_send(manifest())

    with pytest.raises(LedgerError, match="twice"):
        ledger.begin_batch(send, ISSUE, [("ann@example.org", "ann@example.org")] * 2)

    assert ledger.counts(ISSUE) == {}


def test_the_same_address_is_independent_across_issues(ledger: Ledger) -> None:
    first = ledger.start_send(manifest())
    ledger.finish_batch(ledger.begin_batch(first, ISSUE, people("ann")), "sent")
    second = ledger.start_send(manifest("2025-09-01-next"))

    ledger.begin_batch(second, "2025-09-01-next", people("ann"))

    assert ledger.statuses("2025-09-01-next", ["ann@example.org"]) == {"ann@example.org": "pending"}
    assert not ledger.was_sent("2025-09-01-next")


def test_rejected_keys_inside_a_sent_batch(ledger: Ledger) -> None:
    send = ledger.start_send(manifest())
    batch = ledger.begin_batch(send, ISSUE, people("ann", "bob", "cid"))

    ledger.finish_batch(
        batch, "sent", provider_id="msg-3", rejected={"bob@example.org": "550 5.1.1 no such user"}
    )

    by_key = {d.key: d for d in ledger.deliveries(ISSUE)}
    assert by_key["bob@example.org"].status == "rejected"
    assert by_key["bob@example.org"].error == "550 5.1.1 no such user"
    assert by_key["ann@example.org"].status == "sent"
    assert by_key["ann@example.org"].error is None
    assert ledger.counts(ISSUE) == {"sent": 2, "rejected": 1}
    assert [d.key for d in ledger.deliveries(ISSUE, "rejected")] == ["bob@example.org"]


def test_finish_batch_refuses_a_rejection_for_someone_not_in_the_batch(ledger: Ledger) -> None:
    send = ledger.start_send(manifest())
    batch = ledger.begin_batch(send, ISSUE, people("ann"))

    with pytest.raises(LedgerError, match="not in it"):
        ledger.finish_batch(batch, "sent", rejected={"zed@example.org": "550"})

    # Nothing was recorded: the batch is still pending, so a crash now would become unknown.
    assert ledger.counts(ISSUE) == {"pending": 1}


def test_a_batch_is_finished_once(ledger: Ledger) -> None:
    send = ledger.start_send(manifest())
    batch = ledger.begin_batch(send, ISSUE, people("ann"))
    ledger.finish_batch(batch, "sent")

    with pytest.raises(LedgerError, match="already sent"):
        ledger.finish_batch(batch, "failed")
    assert ledger.counts(ISSUE) == {"sent": 1}


def test_recover_turns_what_a_dead_process_left_pending_into_unknown(path: Path) -> None:
    with Ledger(path) as ledger:
        send = ledger.start_send(manifest())
        ledger.finish_batch(ledger.begin_batch(send, ISSUE, people("done")), "sent")
        ledger.begin_batch(send, ISSUE, people("ann", "bob"))
        other = ledger.start_send(manifest("other-issue"))
        ledger.begin_batch(other, "other-issue", people("ann"))

    with Ledger(path) as ledger:
        new_send = ledger.start_send(manifest())
        assert ledger.recover(ISSUE) == 2

        assert ledger.statuses(
            ISSUE, ["ann@example.org", "bob@example.org", "done@example.org"]
        ) == {
            "ann@example.org": "unknown",
            "bob@example.org": "unknown",
            "done@example.org": "sent",
        }
        assert all("interrupted" in (d.error or "") for d in ledger.deliveries(ISSUE, "unknown"))
        assert {s.id: s.status for s in ledger.sends(ISSUE)} == {
            send: "interrupted",
            new_send: "running",
        }
        # Another issue's pending rows belong to a send that may still be running.
        assert ledger.counts("other-issue") == {"pending": 1}
        assert ledger.recover(ISSUE) == 0


def test_a_batch_begun_by_a_process_killed_mid_request_is_recovered(path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from newsletter.storage.ledger import Ledger, Manifest
        ledger = Ledger(Path({str(path)!r}))
        send = ledger.start_send(Manifest("{ISSUE}", "i", "0", "0", "l", "0", "smtp", "0.1.0"))
        ledger.begin_batch(send, "{ISSUE}", [("ann@example.org", "ann@example.org")])
        os.kill(os.getpid(), signal.SIGKILL)  # as if killed while the request was out
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, env=CHILD_ENV
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()

    with Ledger(path) as ledger:
        assert ledger.recover(ISSUE) == 1
        assert ledger.statuses(ISSUE, ["ann@example.org"]) == {"ann@example.org": "unknown"}


def test_reopening_the_file_keeps_everything(path: Path) -> None:
    with Ledger(path) as ledger:
        send = ledger.start_send(manifest())
        ledger.finish_batch(
            ledger.begin_batch(send, ISSUE, people("ann", "bob")),
            "sent",
            provider_id="msg-1",
            rejected={"bob@example.org": "550"},
        )
        ledger.finish_batch(ledger.begin_batch(send, ISSUE, people("cid")), "failed", error="503")
        ledger.finish_send(send, status="done", counts=ledger.counts(ISSUE))
        before = (list(ledger.deliveries(ISSUE)), ledger.sends(), ledger.counts(ISSUE))

    with Ledger(path) as ledger:
        assert (list(ledger.deliveries(ISSUE)), ledger.sends(), ledger.counts(ISSUE)) == before
        assert ledger.counts(ISSUE) == {"sent": 1, "rejected": 1, "failed": 1}
        with pytest.raises(LedgerError, match="already sent"):
            ledger.begin_batch(send, ISSUE, people("ann"))


def test_manifest_and_counts_round_trip(ledger: Ledger) -> None:
    sent = manifest(dry_run=False)
    dry = manifest("2025-09-01-next", provider="sendgrid", dry_run=True)
    first = ledger.start_send(sent)
    second = ledger.start_send(dry)
    ledger.finish_send(first, status="done", counts={"sent": 998, "rejected": 2})

    records = ledger.sends()
    assert [(r.id, r.manifest, r.status, r.counts) for r in records] == [
        (first, sent, "done", {"sent": 998, "rejected": 2}),
        (second, dry, "running", {}),
    ]
    assert records[0].finished_at is not None and records[1].finished_at is None
    assert records[1].provider == "sendgrid"
    assert [r.id for r in ledger.sends("2025-09-01-next")] == [second]


def test_finish_send_of_an_unknown_send(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="no send 42"):
        ledger.finish_send(42, status="done", counts={})


def test_begin_batch_checks_the_send_is_of_this_issue(ledger: Ledger) -> None:
    send = ledger.start_send(manifest())

    with pytest.raises(LedgerError, match="not a send of issue other"):
        ledger.begin_batch(send, "other", people("ann"))


def test_sha256_file_is_the_hash_of_the_contents(tmp_path: Path) -> None:
    data = b"email\nann@example.org\n" * 100_000
    (tmp_path / "list.csv").write_bytes(data)

    assert sha256_file(tmp_path / "list.csv") == hashlib.sha256(data).hexdigest()


def test_sha256_tree_changes_with_any_template(tmp_path: Path) -> None:
    def tree(root: Path, files: dict[str, str]) -> Path:
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return root

    files = {
        "email.html.j2": "<p>{{ intro }}</p>",
        "email.txt.j2": "{{ intro }}",
        "css/a.css": "p{}",
    }
    original = sha256_tree(tree(tmp_path / "a", files))

    assert sha256_tree(tree(tmp_path / "same", files)) == original
    changed = tree(tmp_path / "b", files | {"email.txt.j2": "{{ intro }}!"})
    assert sha256_tree(changed) != original
    renamed = tree(tmp_path / "c", {"email.html.j2": files["email.html.j2"], "css/b.css": "p{}"})
    (renamed / "email.txt.j2").write_text(files["email.txt.j2"])
    assert sha256_tree(renamed) != original
    assert sha256_tree(tree(tmp_path / "d", files | {"extra.j2": ""})) != original


def test_sha256_tree_of_something_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="not a directory"):
        sha256_tree(tmp_path / "missing")


def test_a_corrupt_file_gives_a_clear_error(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"subscribers,and,not,a,database\n" * 200)

    with pytest.raises(LedgerError) as caught:
        Ledger(path)

    message = str(caught.value)
    assert str(path) in message
    assert "damaged or not a ledger" in message and "backup" in message


def test_an_sqlite_file_of_something_else_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE photos (id INTEGER)")
    other.close()

    with pytest.raises(LedgerError, match=r"not a newsletter ledger.*photos"):
        Ledger(path)


def test_a_ledger_from_a_newer_version_is_refused(path: Path) -> None:
    Ledger(path).close()
    newer = sqlite3.connect(path)
    newer.execute("PRAGMA user_version = 99")
    newer.close()

    with pytest.raises(LedgerError, match=r"newer newsletter.*schema 99.*upgrade") as caught:
        Ledger(path)
    assert str(path) in str(caught.value)


def test_the_file_is_in_wal_mode(path: Path) -> None:
    Ledger(path).close()

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail, rather than hang, if taking a lock that should be refused blocks instead."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from newsletter.storage.lock import send_lock
with send_lock(Path(sys.argv[1]), sys.argv[2]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_send_lock_refuses_a_second_process_until_the_holder_is_killed(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path), ISSUE],
        stdout=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "locked\n"

            with deadline(30), pytest.raises(LedgerError) as caught, send_lock(tmp_path, ISSUE):
                pass
            message = str(caught.value)
            assert f"pid {holder.pid}, started " in message
            assert f"is sending issue {ISSUE}" in message
            assert "UTC" in message

            with send_lock(tmp_path, "another-issue"):
                pass  # other issues are not blocked
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=60)

    # The dead holder's lock file (and its PID) is still there, and does not block.
    assert (tmp_path / "locks" / f"{ISSUE}.lock").read_text().startswith(f"pid={holder.pid}")
    with deadline(30), send_lock(tmp_path, ISSUE):
        assert (tmp_path / "locks" / f"{ISSUE}.lock").read_text().startswith(f"pid={os.getpid()}")


def test_send_lock_is_released_on_exit_and_on_error(tmp_path: Path) -> None:
    with send_lock(tmp_path, ISSUE):
        pass
    with pytest.raises(RuntimeError), send_lock(tmp_path, ISSUE):
        raise RuntimeError("the send failed")
    with send_lock(tmp_path, ISSUE):
        pass


def test_send_lock_refuses_an_issue_id_that_is_a_path(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="not an issue id"), send_lock(tmp_path, "../x"):
        pass
