"""`newsletter bounces imaps://...` against a real IMAP server (Dovecot) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.errors import MailboxError
from newsletter.lists.aftermath import read_bounces
from newsletter.lists.mailboxes import KEYWORD, open_mailbox
from newsletter.lists.suppressions import (
    list_suppressions,
    open_sink,
)
from newsletter.storage.bounces import open_state
from tests.bouncing import make_ws, returned, send
from tests.sending import SECRET
from tests.servers.dovecot import PASSWORD, DovecotServer


@pytest.fixture(scope="module")
def imap() -> Iterator[DovecotServer]:
    """One server for the module; each test has its own folder."""
    with DovecotServer() as server:
        yield server


def test_an_imap_folder_is_read_marked_and_not_read_again(
    tmp_path: Path, imap: DovecotServer
) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    url = imap.new_folder("Marked")
    for name in ("gmail_hard.eml", "arf_complaint.eml", "autoreply_out_of_office.eml"):
        imap.append(returned(cfg, name), "Marked")
    env = {**cfg.env, "NEWSLETTER_IMAP_PASSWORD": PASSWORD}

    def run() -> tuple[int, int]:
        box = open_mailbox(url, env, ssl_context=imap.ssl_context())
        try:
            with open_state(cfg.state_dir) as state:
                sink = open_sink(cfg)
                report = read_bounces(cfg, box, sink=sink, state=state)
        finally:
            box.close()
        return report.read, len(report.suppressed)

    assert run() == (3, 2)
    assert {r.email: r.reason for r in list_suppressions(cfg)} == {
        "nobody.here@gmail.com": "hard bounce",
        "grumpy@example.com": "spam complaint",
    }
    client = imap.client()
    client.select_folder("Marked", readonly=True)
    flags = client.get_flags(client.search(["ALL"]))
    client.logout()
    assert all({b"\\Seen", KEYWORD.encode()} <= set(f) for f in flags.values())
    assert len(flags) == 3
    assert run() == (0, 0)


def test_the_cli_reads_imap_with_the_password_from_the_environment(
    tmp_path: Path, imap: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    url = imap.new_folder("ForTheCli")
    imap.append(returned(cfg, "exim_plain_hard.eml"), "ForTheCli")
    monkeypatch.chdir(cfg.root)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", PASSWORD)
    monkeypatch.setenv("NEWSLETTER_IMAP_CA_FILE", str(imap.ca_file()))
    result = CliRunner().invoke(app, ["bounces", url])
    assert result.exit_code == 0, result.output
    assert "left.company@example.net: hard bounce" in result.output


def test_a_wrong_password_is_one_line_that_never_shows_it(imap: DovecotServer) -> None:
    env = {"NEWSLETTER_IMAP_PASSWORD": "not-the-password-987"}
    with pytest.raises(MailboxError) as caught:
        open_mailbox(imap.url, env, ssl_context=imap.ssl_context())
    assert "refused the login" in str(caught.value)
    assert "not-the-password-987" not in str(caught.value)


def test_an_untrusted_certificate_is_refused(imap: DovecotServer) -> None:
    env = {"NEWSLETTER_IMAP_PASSWORD": PASSWORD}
    with pytest.raises(MailboxError, match="cannot connect"):
        open_mailbox(imap.url, env)  # the system's CAs do not know the test CA


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("imap://bounces@127.0.0.1/INBOX", "only imaps://"),
        ("imaps://bounces:hunter2@127.0.0.1/INBOX", "does not go in the URL"),
        ("imaps://127.0.0.1/INBOX", "give the user and host"),
    ],
)
def test_imap_urls_that_are_refused_before_connecting(spec: str, message: str) -> None:
    from newsletter.errors import UsageError

    with pytest.raises(UsageError, match=message) as caught:
        open_mailbox(spec, {"NEWSLETTER_IMAP_PASSWORD": "x" * 20})
    assert "hunter2" not in str(caught.value)
