"""The double opt-in mail through each provider: SMTP to aiosmtpd, SendGrid to the
SendGrid-like server (which checks the body against SendGrid's spec), the outbox."""

from __future__ import annotations

import mailbox
from pathlib import Path

from newsletter.config import Config, load_config
from newsletter.delivery.confirmation import confirmation_message, send_confirmation
from tests.servers.sendgrid import TEST_API_KEY, SendGridServer
from tests.servers.smtp import SMTPServer
from tests.workspace import make_workspace

LINK = "https://r.example.org/confirm?token=abc.def"


def workspace_config(tmp_path: Path, env: dict[str, str]) -> Config:
    ws = make_workspace(tmp_path / "ws")
    return load_config(ws / "newsletter.yaml", env=env)


def test_the_message_carries_the_link_and_says_how_long_it_works(tmp_path: Path) -> None:
    config = workspace_config(tmp_path, {})
    message = confirmation_message(config, "ada@example.org", "Ada", LINK, days=7)
    assert message["To"] == "ada@example.org"
    assert message["Subject"] == "Confirm your subscription to The Weekly Brief"
    assert message["Auto-Submitted"] == "auto-generated"
    text = message.get_content()
    assert text.startswith("Hello Ada,") and LINK in text and "within 7 days" in text


def test_through_the_outbox(tmp_path: Path) -> None:
    config = workspace_config(tmp_path, {})
    send_confirmation(config, confirmation_message(config, "ada@example.org", "", LINK, days=7))
    [message] = list(mailbox.Maildir(config.outbox_dir, factory=None))
    assert message["To"] == "ada@example.org"


def test_through_smtp(tmp_path: Path, smtp_server: SMTPServer) -> None:
    env = {
        "NEWSLETTER_PROVIDER": "smtp",
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
    }
    config = workspace_config(tmp_path, env)
    send_confirmation(config, confirmation_message(config, "ada@example.org", "", LINK, days=7))
    [received] = smtp_server.messages
    assert LINK in received.message.get_content()


def test_through_sendgrid(tmp_path: Path, sendgrid_server: SendGridServer) -> None:
    env = {
        "NEWSLETTER_PROVIDER": "sendgrid",
        "SENDGRID_API_KEY": TEST_API_KEY,
        "SENDGRID_API_HOST": sendgrid_server.url,
    }
    config = workspace_config(tmp_path, env)
    send_confirmation(config, confirmation_message(config, "ada@example.org", "", LINK, days=7))
    [delivered] = sendgrid_server.deliveries()
    assert delivered.email == "ada@example.org"
