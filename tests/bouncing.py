"""Shared set-up for the after-send tests: a workspace whose list holds the addresses the
bounce fixtures name, a real send so the ledger knows them, fixtures signed as they arrive."""

from __future__ import annotations

import mailbox
import shutil
from pathlib import Path

from newsletter.config import Config
from newsletter.delivery.send import SendOptions, send_issue
from newsletter.lists.aftermath import BounceReport, read_bounces
from newsletter.lists.bounces import read_notice
from newsletter.lists.mailboxes import open_mailbox
from newsletter.lists.suppressions import list_suppressions, open_sink
from newsletter.lists.verp import envelope_sender
from newsletter.storage.bounces import open_state
from tests.sending import ISSUE_ID, config
from tests.servers.smtp import SMTPServer
from tests.workspace import SAMPLE, make_workspace

DATA = Path(__file__).parent / "data" / "bounces"
VERP_PLACEHOLDER = b"bounces+VERP-TOKEN@news.example.org"
BOUNCES = "\nbounces:\n  address: bounces@news.example.org\n  verp: true\n"
FIXTURE_READERS = [
    "gone@example.com",
    "nobody.here@gmail.com",
    "full.box@gmail.com",
    "left.company@example.net",
    "no.such.user@example.info",
    "far.away@example.info",
    "former.staff@contoso.example",
    "old.mailbox@fabrikam.example",
    "grumpy@example.com",
    "holiday@example.com",
    "away@example.org",
    "slow@example.org",
    "down.host@example.info",
]
#: Who the VERP token of each fixture names, where the report itself does not say.
SIGNED_FOR = {
    "mangled_hard.eml": "reader2@example.com",
    "arf_complaint_redacted.eml": "reader3@example.com",
}


def make_ws(root: Path, extra: str = BOUNCES, soft_limit: int | None = None) -> Config:
    ws = make_workspace(root)
    names = [*FIXTURE_READERS, *(f"reader{i}@example.com" for i in range(1, 6))]
    (ws / "list.csv").write_text("email\n" + "\n".join(names) + "\n", encoding="utf-8")
    text = extra + (f"  soft_limit: {soft_limit}\n" if soft_limit else "")
    with (ws / "newsletter.yaml").open("a", encoding="utf-8") as fh:
        fh.write(text)
    return config(ws, {})


def send(cfg: Config, issue_id: str = ISSUE_ID) -> None:
    """A real send over SMTP to a server on 127.0.0.1, so the ledger knows who got which
    issue: the outbox's sends are rehearsals, which no bounce can answer."""
    path = cfg.root / "issues" / f"{issue_id}.yaml"
    if not path.exists():
        shutil.copy(cfg.root / SAMPLE, path)
    with SMTPServer() as server:
        smtp = {
            **cfg.env,
            "SMTP_HOST": server.host,
            "SMTP_PORT": str(server.port),
            "SMTP_SECURITY": "none",
        }
        sending = config(cfg.root, smtp)
        # each issue id is a copy of the sample: a new issue on purpose, not a renamed one
        options = SendOptions(provider="smtp", as_new_issue=True)
        report = send_issue(sending, path, cfg.root / "list.csv", options)
    assert report.sent > 0


def returned(cfg: Config, name: str, issue_id: str = ISSUE_ID, rcpt: str | None = None) -> bytes:
    """A fixture as it arrives: its return path signed for the recipient it answers."""
    raw = (DATA / name).read_bytes()
    named = [f.email for f in read_notice(raw).failures if f.email]
    rcpt = rcpt or SIGNED_FOR.get(name) or (named[0] if named else "reader1@example.com")
    return raw.replace(VERP_PLACEHOLDER, envelope_sender(cfg, rcpt, issue_id).encode())


def maildir(path: Path, messages: list[bytes]) -> Path:
    box = mailbox.Maildir(path, create=True)
    for raw in messages:
        box.add(raw)
    box.close()
    return path


def run(cfg: Config, spec: Path) -> BounceReport:
    box = open_mailbox(str(spec), cfg.env)
    try:
        with open_state(cfg.state_dir) as state:
            return read_bounces(cfg, box, sink=open_sink(cfg), state=state)
    finally:
        box.close()


def suppressed(cfg: Config) -> dict[str, str]:
    return {row.email: row.reason for row in list_suppressions(cfg)}
