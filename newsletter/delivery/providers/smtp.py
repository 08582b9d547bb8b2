"""SMTP with the standard library: one connection, reused for every message.

Each message is sent as MAIL, RCPT, DATA by hand (rather than `sendmail`) so that a
failure can be placed: anything before the message body is on the wire means nothing
was delivered and is safe to retry; a connection lost after the body was sent and
before the server's answer is an unknown outcome, never retried blindly.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from newsletter.config import env_secret, redact
from newsletter.content.issue import Line
from newsletter.delivery.providers.base import CampaignView, ProviderSpec, Sent, section
from newsletter.errors import (
    ConfigError,
    PermanentProviderError,
    TransientProviderError,
    UnknownOutcomeError,
)

if TYPE_CHECKING:
    from newsletter.config import Config
    from newsletter.delivery.message import Recipient


class SMTPSettings(BaseModel):
    """`smtp:` in newsletter.yaml; the password comes from SMTP_PASSWORD only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: Line = "localhost"
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    user: Line | None = None
    timeout: float = Field(default=30.0, gt=0)


_SMTP_PORTS = {"ssl": 465, "starttls": 587, "none": 25}


@dataclass(frozen=True)
class SMTPServer:
    """Where and how to reach the SMTP server, settled from config and environment."""

    host: str
    port: int
    security: str
    user: str | None
    password: str | None = field(repr=False)
    timeout: float


def smtp_server(config: Config, host: str | None = None, port: int | None = None) -> SMTPServer:
    """CLI flag > environment > `smtp:` in newsletter.yaml > defaults."""
    env, s = config.env, section(config, "smtp", SMTPSettings)
    security = env.get("SMTP_SECURITY") or s.security
    if security not in _SMTP_PORTS:
        raise ConfigError(f"SMTP_SECURITY is {security!r}; use starttls, ssl or none")
    raw_port = port or env.get("SMTP_PORT") or s.port or _SMTP_PORTS[security]
    try:
        number = int(raw_port)
    except ValueError:
        raise ConfigError(f"SMTP_PORT is {raw_port!r}; it must be a port number") from None
    return SMTPServer(
        host=host or env.get("SMTP_HOST") or s.host,
        port=number,
        security=security,
        user=env.get("SMTP_USER") or s.user,
        password=env_secret(env, "SMTP_PASSWORD") or None,
        timeout=s.timeout,
    )


PROVIDER = ProviderSpec(
    name="smtp",
    ready=smtp_server,
    open=lambda campaign, server, sandbox: SMTPProvider(campaign, server),
    settings=SMTPSettings,
    secret_names=("SMTP_PASSWORD",),
    deliver_one=lambda server, message, secrets: _deliver_one(server, message),
)


def _deliver_one(s: SMTPServer, message: EmailMessage) -> None:
    """One message on its own connection (the reader service's confirmation mail)."""
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


#: Codes at RCPT that say this mailbox will never take mail: it goes on the suppression list.
HARD_BOUNCE = frozenset({550, 551, 553})
_LEADING_DOT = re.compile(rb"(?m)^\.")


class _Refused(NamedTuple):
    """The server refused this one address (RCPT): the message was not sent to it."""

    code: int | None
    reason: str


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())[:300]


class SMTPProvider:
    name = "smtp"
    batch_size = 1
    concurrency = 1

    def __init__(self, campaign: CampaignView, server: SMTPServer) -> None:
        self.server = server
        self.builder = campaign.builder
        self.sender = campaign.headers.from_email
        self._secrets = campaign.secrets
        self._conn: smtplib.SMTP | None = None

    @property
    def where(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    def _open(self) -> smtplib.SMTP:
        s = self.server
        context = ssl.create_default_context()
        conn: smtplib.SMTP | None = None
        try:
            if s.security == "ssl":
                conn = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            conn.ehlo()
            if s.security == "starttls":
                conn.starttls(context=context)
                conn.ehlo()
            if s.user:
                conn.login(s.user, s.password or "")
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return conn

    def _connect(self) -> smtplib.SMTP:
        try:
            conn = self._open()
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentProviderError(
                f"the SMTP server {self.where} refused the login for {self.server.user!r} "
                f"({exc.smtp_code} {_text(exc.smtp_error)}); check SMTP_USER and SMTP_PASSWORD",
                status=exc.smtp_code,
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentProviderError(
                f"the SMTP server {self.where} does not support what we asked ({exc}); "
                "check SMTP_SECURITY (starttls, ssl or none) and SMTP_USER"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientProviderError(
                f"cannot connect to the SMTP server {self.where}: "
                f"{redact(str(exc) or type(exc).__name__, self._secrets)}"
            ) from None
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _refused(
        self, stage: str, code: int, reply: bytes
    ) -> TransientProviderError | PermanentProviderError:
        answer = redact(_text(reply), self._secrets)
        text = f"the SMTP server {self.where} answered {code} {answer} at {stage}"
        if code == 421:
            self._drop()
        elif self._conn is not None:
            try:
                self._conn.rset()
            except (OSError, smtplib.SMTPException):
                self._drop()
        if 400 <= code < 500:
            return TransientProviderError(text, status=code)
        return PermanentProviderError(text + "; fix what it says before sending again", status=code)

    def send(self, batch: Sequence[Recipient]) -> Sent:
        (recipient,) = batch  # one message per batch: the ledger knows each one's fate
        message_id = self.builder.message_id()
        data = self.builder.build(recipient, message_id=message_id).replace(b"\n", b"\r\n")
        outcome = self._deliver(recipient.email, data)
        if isinstance(outcome, _Refused):
            key = recipient.key
            hard = frozenset({key}) if outcome.code in HARD_BOUNCE else frozenset()
            return Sent(provider_id=None, rejected={key: outcome.reason}, hard_bounces=hard)
        return Sent(provider_id=f"{message_id} {outcome}")

    def _deliver(self, rcpt: str, data: bytes) -> str | _Refused:
        """The server's answer to the message (its queue id), or why it refused the address."""
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        options = []
        if not rcpt.isascii():
            if not conn.has_extn("smtputf8"):
                return _Refused(
                    None, f"the server {self.where} cannot take non-ASCII addresses (SMTPUTF8)"
                )
            options.append("SMTPUTF8")
        try:
            code, reply = conn.mail(self.sender, options)
            if code != 250:
                raise self._refused("MAIL FROM", code, reply)
            code, reply = conn.rcpt(rcpt)
            if code not in (250, 251):
                if 500 <= code < 600:
                    conn.rset()
                    return _Refused(code, f"{code} {redact(_text(reply), self._secrets)}")
                raise self._refused("RCPT TO", code, reply)
            code, reply = conn.docmd("DATA")
            if code != 354:
                raise self._refused("DATA", code, reply)
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self._drop()
            raise TransientProviderError(
                f"the SMTP server {self.where} closed the connection before the message was "
                f"sent ({type(exc).__name__}); nothing was delivered"
            ) from None
        try:
            body = _LEADING_DOT.sub(b"..", data)
            if not body.endswith(b"\r\n"):
                body += b"\r\n"
            conn.send(body + b".\r\n")
            code, reply = conn.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self._drop()
            raise UnknownOutcomeError(
                f"the SMTP server {self.where} took the message but the connection was lost "
                f"before it answered ({type(exc).__name__}); it may or may not be delivered"
            ) from None
        if code != 250:
            raise self._refused("end of DATA", code, reply)
        return _text(reply)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (OSError, smtplib.SMTPException):
                pass
            finally:
                self._conn = None
