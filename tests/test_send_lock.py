"""One send of an issue at a time: a second `newsletter send` of the same issue, while the
first is mid-message, is refused with who holds the lock, and never touches the ledger."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from newsletter.storage.ledger import Ledger
from tests.commands import smtp_env, start_send, wait_for
from tests.sending import ISSUE_ID, workspace
from tests.servers.holding import HoldingSMTP


def test_a_second_send_of_the_same_issue_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 5, "smtp:\n  connections: 1\n")  # one message in flight
    holding = HoldingSMTP()
    try:
        first = start_send(ws, smtp_env(holding.port), "-p", "smtp", "--json")
        wait_for(lambda: len(holding.received) == 1, first)  # sending, and waiting for an answer
        second = start_send(ws, smtp_env(holding.port), "-p", "smtp", "--json")
        out, err = second.communicate(timeout=60)
        assert second.returncode == 1, (out, err)
        message = " ".join(err.decode().split())
        assert f"another `newsletter send` (pid {first.pid}, started " in message
        assert f"is sending issue {ISSUE_ID}; wait for it to finish or stop it" in message
        assert first.poll() is None and len(holding.received) == 1
        holding.release.set()
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
    finally:
        holding.stop()
    assert Counter(r for r, _ in holding.received) == {
        f"reader{i:05d}@example.com": 1 for i in range(5)
    }
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert len(ledger.sends(ISSUE_ID)) == 1  # the refused one never touched the ledger
