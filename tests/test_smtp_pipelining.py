"""SMTP over several connections with PIPELINING (RFC 2920), against a server that offers it."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.delivery.send import Report, SendOptions, SendStopped, send_issue
from newsletter.errors import ConfigError
from newsletter.storage.ledger import Ledger
from newsletter.storage.store import open_store
from tests.commands import smtp_env
from tests.sending import ISSUE_ID, config, workspace
from tests.servers.smtp_pipelining import DROP, PipeliningServer
from tests.workspace import SAMPLE

FAST = SendOptions(provider="smtp", backoff=0.0, max_backoff=0.0)


def everyone(n: int) -> list[str]:
    return [f"reader{i:05d}@example.com" for i in range(n)]


def counts(ws: Path) -> dict[str, int]:
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        return dict(ledger.counts(ISSUE_ID))


def send(ws: Path, server: PipeliningServer) -> Report:
    cfg = config(ws, smtp_env(server.port))
    return send_issue(cfg, ws / SAMPLE, ws / "list.csv", FAST, sleep=lambda s: None)


def test_messages_are_pipelined_over_several_connections(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 100, "smtp:\n  connections: 3\n")
    with PipeliningServer() as server:
        report = send(ws, server)
    assert report.sent == 100
    assert sorted(server.recipients()) == everyone(100)
    # the end of one message and the next one's MAIL, RCPT and DATA were answered in one write
    assert max(server.flushes) >= 4
    assert 1 < server.connections <= 3
    assert counts(ws) == {"sent": 100}
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        ids = {d.provider_id for d in ledger.deliveries(ISSUE_ID)}
    assert len(ids) == 100 and all(i and "queued as Q" in i for i in ids)


def test_without_pipelining_each_command_waits_for_its_answer(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 30)
    with PipeliningServer(pipelining=False) as server:
        report = send(ws, server)
    assert report.sent == 30
    assert sorted(server.recipients()) == everyone(30)
    assert set(server.flushes) == {1}


def test_a_drop_in_the_middle_of_a_pipelined_group(tmp_path: Path) -> None:
    """Message 3's body and end go with message 4's MAIL, RCPT, DATA; the server stores 3 and
    closes without a word: 1 and 2 are sent, 3 unknown, 4 to 6 sent on a new connection."""
    ws = workspace(tmp_path / "ws", 6, "smtp:\n  connections: 1\n")
    with PipeliningServer(end_replies={3: DROP}) as server:
        report = send(ws, server)
        assert (report.sent, report.unknown) == (5, 1)
        assert sorted(server.recipients()) == everyone(6)  # each once
        assert server.connections == 2
        assert counts(ws) == {"sent": 5, "unknown": 1}
        with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
            (lost,) = ledger.deliveries(ISSUE_ID, "unknown")
        assert lost.email == "reader00002@example.com"
        rerun = send(ws, server)
        assert (rerun.sent, rerun.unknown_before) == (0, 1)
        assert sorted(server.recipients()) == everyone(6)


def test_a_temporary_refusal_at_the_end_of_data_is_retried_once(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 5, "smtp:\n  connections: 1\n")
    with PipeliningServer(end_replies={2: "451 4.3.0 try again later"}) as server:
        report = send(ws, server)
    assert report.sent == 5 and report.retries == 1
    assert sorted(server.recipients()) == everyone(5)


def test_a_421_at_mail_in_a_pipelined_group_reconnects(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 5, "smtp:\n  connections: 1\n")
    with PipeliningServer(mail_replies={3: "421 4.3.2 shutting down"}) as server:
        report = send(ws, server)
        assert report.sent == 5
        assert sorted(server.recipients()) == everyone(5)
        assert server.connections == 2
    assert counts(ws) == {"sent": 5}


def test_a_refused_address_in_a_pipelined_group_is_suppressed(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 5)
    bounce = {"reader00002@example.com": "550 5.1.1 no such user"}
    with PipeliningServer(rcpt_replies=bounce) as server:
        report = send(ws, server)
    assert (report.sent, report.rejected) == (4, 1)
    assert "reader00002@example.com" not in server.recipients()
    with open_store(config(ws, {})) as store:
        [suppressed] = store.suppressions()
    assert (suppressed.email, suppressed.kind) == ("reader00002@example.com", "bounce")
    assert "550 5.1.1 no such user" in suppressed.reason
    assert counts(ws) == {"sent": 4, "rejected": 1}


def test_a_permanent_refusal_of_a_message_stops_and_keeps_what_was_sent(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 5, "smtp:\n  connections: 1\n")
    with PipeliningServer(end_replies={3: "554 5.7.1 rejected as spam"}) as server:
        with pytest.raises(SendStopped, match=r"554 5\.7\.1 rejected as spam at end of DATA"):
            send(ws, server)
        assert server.recipients() == everyone(5)[:2] + everyone(5)[3:4]
    # the one in flight behind the refused one was delivered and is recorded as such; the
    # last never left, so it has no row: the next run sends it as if never tried
    assert counts(ws) == {"sent": 3, "failed": 1}


@pytest.mark.parametrize("value", ["0", "33"])
def test_connections_must_be_between_1_and_32(tmp_path: Path, value: str) -> None:
    ws = workspace(tmp_path / "ws", 1, f"smtp:\n  connections: {value}\n")
    with pytest.raises(ConfigError, match="connections"):
        load_config(ws / "newsletter.yaml", env={})
