"""The double opt-in mail: one plain-text message with the confirmation link.

It goes through the workspace's provider (its `ProviderSpec.deliver_one`), but not through
the issue pipeline: there is no issue to render, and the reader service must run without
premailer.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

import jinja2

from newsletter.config import Config, redact, secrets
from newsletter.delivery.providers import PROVIDERS
from newsletter.errors import ConfigError, ProviderError, TransientProviderError

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
    name = config.env.get("NEWSLETTER_PROVIDER") or config.settings.provider
    spec = PROVIDERS.get(name)
    if spec is None or spec.deliver_one is None:
        raise ConfigError(f"provider {name!r} cannot send the confirmation mail")
    known = secrets(config)
    try:
        spec.deliver_one(spec.ready(config), message, known)
    except ProviderError:
        raise
    except (OSError, smtplib.SMTPException) as exc:
        raise TransientProviderError(
            redact(f"the confirmation mail was not sent ({name}): {exc}", known)
        ) from None
