"""The issue's promise end to end: an SMTP send, a bounce mailbox of every form and a
SendGrid account's reports end with exactly those addresses suppressed, once."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from newsletter.delivery.send import SendOptions, send_issue
from newsletter.lists.aftermath import read_bounces
from newsletter.lists.mailboxes import open_mailbox
from newsletter.lists.sendgrid_sync import sync_sendgrid
from newsletter.lists.suppressions import list_suppressions, open_sink
from newsletter.storage.bounces import open_state
from tests.bouncing import DATA, FIXTURE_READERS, maildir, make_ws, returned
from tests.sending import ISSUE_ID, config
from tests.servers.sendgrid import TEST_API_KEY, SendGridServer
from tests.servers.smtp import SMTPServer
from tests.workspace import SAMPLE

NEXT = "2025-08-08-next"


def test_smtp_send_then_bounces_and_sendgrid_reports_suppress_exactly_those(
    tmp_path: Path, smtp_server: SMTPServer, sendgrid_server: SendGridServer
) -> None:
    ws = make_ws(tmp_path / "ws")
    env = {
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
        "SENDGRID_API_KEY": TEST_API_KEY,
        "SENDGRID_API_HOST": sendgrid_server.url,
    }
    cfg = config(ws.root, env)
    readers = len(FIXTURE_READERS) + 5
    first = send_issue(cfg, cfg.root / SAMPLE, cfg.root / "list.csv", SendOptions("smtp"))
    assert first.sent == readers

    # what comes back: every MTA's form in the bounce mailbox, and SendGrid's lists
    spec = maildir(tmp_path / "Bounces", [returned(cfg, p.name) for p in DATA.glob("*.eml")])
    now = int(time.time())
    sendgrid_server.add_suppressions(
        "bounces", {"email": "reader5@example.com", "created": now, "status": "5.1.1"}
    )
    sendgrid_server.add_suppressions(
        "spam_reports", {"email": "reader4@example.com", "created": now}
    )

    def after_the_send() -> None:
        with open_state(cfg.state_dir) as state:
            box = open_mailbox(str(spec), cfg.env)
            try:
                read_bounces(cfg, box, sink=open_sink(cfg), state=state)
            finally:
                box.close()
            sync_sendgrid(cfg, sink=open_sink(cfg), state=state, sleep=lambda s: None)

    after_the_send()

    expected = {
        "gone@example.com": "hard bounce",
        "nobody.here@gmail.com": "hard bounce",
        "left.company@example.net": "hard bounce",
        "no.such.user@example.info": "hard bounce",
        "far.away@example.info": "hard bounce",
        "former.staff@contoso.example": "hard bounce",
        "old.mailbox@fabrikam.example": "hard bounce",
        "reader2@example.com": "hard bounce",
        "reader5@example.com": "hard bounce",
        "grumpy@example.com": "spam complaint",
        "reader3@example.com": "spam complaint",
        "reader4@example.com": "spam complaint",
    }
    assert {r.email: r.reason for r in list_suppressions(cfg)} == expected
    with open_state(cfg.state_dir) as state:
        assert state.issue_counts(ISSUE_ID) == {"hard": 9, "soft": 2, "complaint": 3}

    # reruns change nothing
    before = list_suppressions(cfg)
    after_the_send()
    assert list_suppressions(cfg) == before

    # the next send skips them; soft bounces and auto-repliers still get it
    shutil.copy(cfg.root / SAMPLE, cfg.root / "issues" / f"{NEXT}.yaml")
    mailed_before = len(smtp_server.messages)
    second = send_issue(  # a copy of the sample: a new issue on purpose
        cfg,
        cfg.root / "issues" / f"{NEXT}.yaml",
        cfg.root / "list.csv",
        SendOptions("smtp", as_new_issue=True),
    )
    got = {r for m in smtp_server.messages[mailed_before:] for r in m.rcpt_tos}
    assert second.sent == readers - len(expected)
    assert got.isdisjoint(expected)
    assert {"full.box@gmail.com", "holiday@example.com", "down.host@example.info"} <= got
