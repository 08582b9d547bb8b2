"""SendGrid requests over kept-open connections: fewer handshakes, and still each reader once.

The server counts the connections it was opened, and can close one right after its answer
without saying so, as an API's keep-alive timeout does between two batches.
"""

from __future__ import annotations

from pathlib import Path

from newsletter.storage.ledger import Ledger
from tests.sending import ISSUE_ID, sg_send, workspace
from tests.servers.sendgrid import SendGridServer, close_after_answer, drop_after_accept


def send(ws: Path, server: SendGridServer, settings: str = "") -> tuple[int, int, int]:
    report = sg_send(ws, server)
    return report.sent, report.unknown, report.batches


def test_requests_reuse_one_connection_per_request_in_flight(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 12, "sendgrid:\n  batch_size: 1\n  concurrent_requests: 2\n")

    assert send(ws, sendgrid_server) == (12, 0, 12)

    assert sendgrid_server.requests == 12
    assert 1 <= sendgrid_server.connections_opened <= 2  # one per sending thread, kept open
    assert sendgrid_server.delivered_to() == {f"reader{i:05d}@example.com": 1 for i in range(12)}


def test_a_connection_the_server_closed_between_batches_is_replaced_not_left_unknown(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 6, "sendgrid:\n  batch_size: 1\n  concurrent_requests: 1\n")
    # every other answer is followed by the server closing the connection, unannounced
    sendgrid_server.inject(*[close_after_answer(), None] * 3)  # type: ignore[list-item]

    assert send(ws, sendgrid_server) == (6, 0, 6)

    assert sendgrid_server.requests == 6  # nothing written twice
    assert sendgrid_server.connections_opened == 4  # the first, and one after each close
    assert sendgrid_server.delivered_to() == {f"reader{i:05d}@example.com": 1 for i in range(6)}
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {"sent": 6}


def test_an_answer_lost_on_a_kept_connection_is_unknown_and_never_written_again(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 3, "sendgrid:\n  batch_size: 1\n  concurrent_requests: 1\n")
    sendgrid_server.inject(None, drop_after_accept())  # type: ignore[arg-type]

    assert send(ws, sendgrid_server) == (2, 1, 3)

    assert sendgrid_server.requests == 3
    assert sum(sendgrid_server.delivered_to().values()) == 3  # the second was taken, unanswered
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {"sent": 2, "unknown": 1}
