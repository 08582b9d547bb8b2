"""RCPT TO for a server with and without SMTPUTF8 (RFC 6531): an address with a non-ASCII
local part is set aside for a server without it, the batch and the connection go on."""

from __future__ import annotations

from pathlib import Path

from newsletter.delivery.send import Report, SendOptions, send_issue
from newsletter.lists.addresses import NO_SMTPUTF8
from newsletter.storage.ledger import Ledger
from tests.sending import ISSUE_ID, config, workspace
from tests.servers.smtp_pipelining import PipeliningServer
from tests.workspace import SAMPLE

LIST = (
    "email,name\n"
    "reader00000@example.com,Reader 0\n"
    "jürgen@example.com,Jürgen\n"
    "ada@exämple.com,Ada\n"
    "reader00001@example.com,Reader 1\n"
)


def send(tmp_path: Path, server: PipeliningServer) -> tuple[Path, Report]:
    ws = workspace(tmp_path / "ws", 0, "smtp:\n  connections: 1\n")
    (ws / "list.csv").write_text(LIST, encoding="utf-8")
    env = {"SMTP_HOST": server.host, "SMTP_PORT": str(server.port), "SMTP_SECURITY": "none"}
    options = SendOptions(provider="smtp", backoff=0.0, max_backoff=0.0)
    report = send_issue(config(ws, env), ws / SAMPLE, ws / "list.csv", options)
    return ws, report


def test_without_smtputf8_a_non_ascii_local_part_is_rejected_and_the_rest_sent(
    tmp_path: Path,
) -> None:
    with PipeliningServer(smtputf8=False) as server:
        ws, report = send(tmp_path, server)
        assert (report.sent, report.rejected, report.failed) == (3, 1, 0)
        # the domain goes in its xn-- form; the local part that has none is not tried
        assert sorted(server.recipients()) == [
            "ada@xn--exmple-cua.com",
            "reader00000@example.com",
            "reader00001@example.com",
        ]
        assert server.connections == 1  # set aside, not a lost connection
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        (row,) = ledger.deliveries(ISSUE_ID, "rejected")
    assert row.email == "jürgen@example.com"
    assert row.error == NO_SMTPUTF8


def test_with_smtputf8_every_address_goes_as_it_is(tmp_path: Path) -> None:
    with PipeliningServer(smtputf8=True) as server:
        ws, report = send(tmp_path, server)
        assert (report.sent, report.rejected) == (4, 0)
        assert sorted(server.recipients()) == [
            "ada@exämple.com",
            "jürgen@example.com",
            "reader00000@example.com",
            "reader00001@example.com",
        ]
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {"sent": 4}
