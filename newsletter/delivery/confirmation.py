"""The double opt-in mail: one plain-text message with the confirmation link.

It goes through the workspace's provider (the outbox, SMTP or SendGrid), but not through
the issue pipeline: there is no issue to render, and the reader service must run without
premailer. The SendGrid client is imported only when a SendGrid workspace sends one.
"""

from __future__ import annotations

import mailbox
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

import jinja2

from newsletter.config import Config, redact, secrets
from newsletter.delivery.providers.sendgrid import sendgrid_account
from newsletter.delivery.providers.smtp import smtp_server
from newsletter.errors import PermanentProviderError, ProviderError, TransientProviderError

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("newsletter", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # plain text
    keep_trailing_newline=True,
)


def confirmation_message(
    config: Config, to: str, name: str, link: str, *, days: int
) -> EmailMessage:
    """The confirmation mail to `to`, asking them to open `link`."""
    s = config.settings
    message = EmailMessage()
    message["From"] = formataddr((s.from_.name or s.name, s.from_.email))
    message["To"] = to
    message["Subject"] = f"Confirm your subscription to {s.name}"
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=s.from_.email.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies, please
    if s.reply_to:
        message["Reply-To"] = s.reply_to
    text = _ENV.get_template("reader/confirm_email.txt").render(
        name=name,
        newsletter=s.name,
        email=to,
        link=link,
        days=days,
        postal_address=s.postal_address,
    )
    message.set_content(text)
    return message


def send_confirmation(config: Config, message: EmailMessage) -> None:
    """Hand the message to the workspace's provider; ProviderError if it is not taken."""
    provider = config.env.get("NEWSLETTER_PROVIDER") or config.settings.provider
    try:
        if provider == "smtp":
            _smtp(config, message)
        elif provider == "sendgrid":
            _sendgrid(config, message)
        else:
            box = mailbox.Maildir(config.outbox_dir, factory=None, create=True)
            try:
                box.add(message)
            finally:
                box.close()
    except ProviderError:
        raise
    except (OSError, smtplib.SMTPException) as exc:
        raise TransientProviderError(
            redact(f"the confirmation mail was not sent ({provider}): {exc}", secrets(config))
        ) from None


def _smtp(config: Config, message: EmailMessage) -> None:
    s = smtp_server(config)
    context = ssl.create_default_context()
    conn: smtplib.SMTP
    if s.security == "ssl":
        conn = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
    else:
        conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
    with conn:
        if s.security == "starttls":
            conn.starttls(context=context)
        if s.user:
            conn.login(s.user, s.password or "")
        conn.send_message(message)


def _sendgrid(config: Config, message: EmailMessage) -> None:
    from python_http_client.exceptions import HTTPError
    from sendgrid import SendGridAPIClient

    account = sendgrid_account(config)
    sender = config.settings.from_
    body = {
        "personalizations": [{"to": [{"email": str(message["To"])}]}],
        "from": {"email": sender.email, "name": sender.name or config.settings.name},
        "subject": str(message["Subject"]),
        "content": [{"type": "text/plain", "value": message.get_content()}],
        "tracking_settings": {"click_tracking": {"enable": False}},
    }
    try:
        SendGridAPIClient(api_key=account.api_key, host=account.host).client.mail.send.post(
            request_body=body
        )
    except HTTPError as exc:
        raise PermanentProviderError(
            f"SendGrid refused the confirmation mail (HTTP {exc.status_code})",
            status=exc.status_code,
        ) from None
