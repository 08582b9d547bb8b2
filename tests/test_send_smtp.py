"""The SMTP provider against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.delivery.send import SendOptions, send_issue
from newsletter.errors import SendStopped
from newsletter.storage.ledger import Ledger
from newsletter.storage.store import open_store
from tests.sending import ISSUE_ID, SECRET, config, workspace
from tests.servers.smtp import SMTPServer, drop, reply
from tests.workspace import SAMPLE

FAST = {"backoff": 0.0, "max_backoff": 0.0}


def smtp_env(server: SMTPServer, **extra: str) -> dict[str, str]:
    return {
        "SMTP_HOST": server.host,
        "SMTP_PORT": str(server.port),
        "SMTP_SECURITY": "none",
        **extra,
    }


def received(server: SMTPServer) -> Counter[str]:
    return Counter(r for m in server.messages for r in m.rcpt_tos)


def test_each_subscriber_once_over_one_connection(tmp_path: Path, smtp_server: SMTPServer) -> None:
    ws = workspace(tmp_path / "ws", 25)
    report = send_issue(
        config(ws, smtp_env(smtp_server)),
        ws / SAMPLE,
        ws / "list.csv",
        SendOptions(provider="smtp"),
    )
    assert report.sent == 25
    assert received(smtp_server) == {f"reader{i:05d}@example.com": 1 for i in range(25)}
    assert smtp_server.connections == 4  # the list spread over smtp.connections (4)
    message = next(
        m.message for m in smtp_server.messages if m.rcpt_tos == ["reader00007@example.com"]
    )
    assert message["To"] == "Reader 7 <reader00007@example.com>"
    assert message["From"] == "The Weekly Brief <brief@example.org>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "token=" in message["List-Unsubscribe"]
    assert "Hi Reader 7," in message.get_body(("html",)).get_content()
    assert smtp_server.messages[0].mail_from == "brief@example.org"
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {"sent": 25}
        ids = {d.provider_id for d in ledger.deliveries(ISSUE_ID)}
    assert all(ids) and len(ids) == 25


def test_lines_that_begin_with_a_dot_arrive_whole(tmp_path: Path, smtp_server: SMTPServer) -> None:
    """SMTP ends a message at a line of one dot and drops a line's leading dot unless it is
    doubled (RFC 5321, 4.5.2): a paragraph or a name that begins with one must arrive whole."""
    ws = workspace(tmp_path / "ws", 0)
    (ws / "list.csv").write_text("email,name\ndot@example.com,.Dot\n", encoding="utf-8")
    issue = ws / SAMPLE
    issue.write_text(
        issue.read_text(encoding="utf-8").replace("intro: |\n  Ten", "intro: |\n  .NET aside, ten"),
        encoding="utf-8",
    )
    report = send_issue(
        config(ws, smtp_env(smtp_server)), issue, ws / "list.csv", SendOptions(provider="smtp")
    )
    assert report.sent == 1
    (message,) = [m.message for m in smtp_server.messages]
    text = message.get_body(("plain",)).get_content()
    assert "\n.NET aside, ten stories" in text
    assert "Hi .Dot," in message.get_body(("html",)).get_content()
    assert message["To"].addresses[0].display_name == ".Dot"


def test_login_with_the_password_from_the_environment(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 3)
    with SMTPServer(username="mailer", password="hunter2-long-pass") as server:
        env = smtp_env(server, SMTP_USER="mailer", SMTP_PASSWORD="hunter2-long-pass")
        report = send_issue(
            config(ws, env), ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp")
        )
        assert report.sent == 3
        assert {m.login for m in server.messages} == {"mailer"}


def test_a_wrong_password_stops_with_a_hint_and_never_prints_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = workspace(tmp_path / "ws", 3)
    monkeypatch.chdir(ws)
    with SMTPServer(username="mailer", password="right-password-123") as server:
        env = smtp_env(
            server, SMTP_USER="mailer", SMTP_PASSWORD="wrong-password-456", NEWSLETTER_SECRET=SECRET
        )
        result = CliRunner().invoke(
            app, ["send", SAMPLE, "--to", "list.csv", "--yes", "-p", "smtp"], env=env
        )
        assert result.exit_code == 3
        assert "refused the login for 'mailer'" in result.output
        assert "check SMTP_USER and SMTP_PASSWORD" in result.output
        assert "wrong-password-456" not in result.output
        assert server.messages == []
    ledger_bytes = (ws / ".newsletter" / "ledger.sqlite").read_bytes()
    assert b"wrong-password-456" not in ledger_bytes


def test_temporary_failures_are_retried_and_the_connection_reopened(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    ws = workspace(tmp_path / "ws", 6, "smtp:\n  connections: 1\n")  # faults in order
    smtp_server.inject(reply(451, at="MAIL"), reply(421, at="MAIL"), reply(451, at="DATA"))
    report = send_issue(
        config(ws, smtp_env(smtp_server)),
        ws / SAMPLE,
        ws / "list.csv",
        SendOptions(provider="smtp", **FAST),
        sleep=lambda s: None,
    )
    assert report.sent == 6 and report.retries == 3
    assert received(smtp_server) == {f"reader{i:05d}@example.com": 1 for i in range(6)}
    assert smtp_server.connections == 2  # the 421 closed the first one


def test_a_refused_address_is_reported_and_suppressed(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    ws = workspace(tmp_path / "ws", 4)
    smtp_server.reject("reader00002@example.com", 550)
    cfg = config(ws, smtp_env(smtp_server))
    report = send_issue(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
    assert (report.sent, report.rejected) == (3, 1)
    assert "reader00002@example.com" not in received(smtp_server)
    with open_store(cfg) as store:
        [suppressed] = store.suppressions()
    assert (suppressed.email, suppressed.kind, suppressed.issue) == (
        "reader00002@example.com",
        "bounce",
        "2025-08-01-north-korea",
    )
    assert suppressed.reason.startswith("550 ")
    again = send_issue(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
    assert again.sent == 0 and again.skipped["suppressed"] == 1


def test_a_connection_lost_after_the_message_is_an_unknown_outcome(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    ws = workspace(tmp_path / "ws", 4, "smtp:\n  connections: 1\n")  # reader 0 goes first
    smtp_server.inject(drop(stored=True))  # the first message arrives, its answer never does
    cfg = config(ws, smtp_env(smtp_server))
    report = send_issue(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
    assert (report.sent, report.unknown) == (3, 1)
    assert received(smtp_server) == {f"reader{i:05d}@example.com": 1 for i in range(4)}
    rerun = send_issue(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
    assert (rerun.sent, rerun.unknown_before, rerun.already_sent) == (0, 1, 3)
    assert max(received(smtp_server).values()) == 1  # not resent without --retry-unknown
    retried = send_issue(
        cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp", retry_unknown=True)
    )
    assert retried.sent == 1
    assert received(smtp_server)["reader00000@example.com"] == 2  # what --retry-unknown means


def test_an_unreachable_server_fails_the_batch_and_says_so(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 2)
    with SMTPServer() as server:
        env = smtp_env(server)
    with pytest.raises(
        SendStopped, match=r"cannot connect to the SMTP server 127\.0\.0\.1:\d+"
    ) as info:
        send_issue(
            config(ws, env),
            ws / SAMPLE,
            ws / "list.csv",
            SendOptions(provider="smtp", max_attempts=2, **FAST),
            sleep=lambda s: None,
        )
    assert "gave up after 2 tries" in str(info.value)
    assert info.value.report.failed == 2 and info.value.report.sent == 0  # one batch of two
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {}  # each message is marked as it leaves: none did


def test_a_permanent_refusal_of_the_message_stops_the_send(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    ws = workspace(tmp_path / "ws", 3, "smtp:\n  connections: 1\n")
    smtp_server.inject(reply(554, "5.7.1 Message rejected as spam", at="DATA"))
    with pytest.raises(SendStopped, match=r"554 5\.7\.1 Message rejected as spam at end of DATA"):
        send_issue(
            config(ws, smtp_env(smtp_server)),
            ws / SAMPLE,
            ws / "list.csv",
            SendOptions(provider="smtp"),
        )
    assert smtp_server.messages == []
