"""An SMTP send with `bounces.verp` carries each recipient's signed return path as its MAIL
FROM, so a bounce to that address names its reader and issue whatever the report hides."""

from __future__ import annotations

from pathlib import Path

from newsletter.delivery.send import SendOptions, send_issue
from newsletter.lists.verp import VerpResolver, envelope_sender
from tests.bouncing import make_ws
from tests.sending import ISSUE_ID, config
from tests.servers.smtp import SMTPServer
from tests.workspace import SAMPLE


def _send_over_smtp(root: Path, extra: str) -> tuple[list[tuple[str, str]], Path]:
    cfg = make_ws(root, extra=extra)
    with SMTPServer() as server:
        env = {
            **cfg.env,
            "SMTP_HOST": server.host,
            "SMTP_PORT": str(server.port),
            "SMTP_SECURITY": "none",
        }
        report = send_issue(
            config(cfg.root, env), cfg.root / SAMPLE, cfg.root / "list.csv", SendOptions("smtp")
        )
        got = [(m.mail_from, m.rcpt_tos[0]) for m in server.messages]
    assert report.sent == len(got) > 0
    return got, cfg.root


def test_each_message_leaves_with_its_own_signed_return_path(tmp_path: Path) -> None:
    got, root = _send_over_smtp(
        tmp_path / "ws", "\nbounces:\n  address: bounces@news.example.org\n  verp: true\n"
    )
    cfg = config(root, {})
    resolver = VerpResolver(cfg)
    for mail_from, rcpt in got:
        assert mail_from == envelope_sender(cfg, rcpt, ISSUE_ID)
        assert mail_from.startswith("bounces+") and mail_from.endswith("@news.example.org")
        assert resolver.resolve([mail_from]) == (rcpt, ISSUE_ID)
    assert len({mail_from for mail_from, _ in got}) == len(got)


def test_without_verp_every_message_leaves_from_the_bounce_address(tmp_path: Path) -> None:
    got, _ = _send_over_smtp(tmp_path / "ws", "\nbounces:\n  address: bounces@news.example.org\n")
    assert {mail_from for mail_from, _ in got} == {"bounces@news.example.org"}
