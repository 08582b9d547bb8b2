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
from typing import TYPE_CHECKING, NamedTuple

from newsletter.config import SMTPServer, redact, secrets, smtp_server
from newsletter.delivery.providers import Sent
from newsletter.errors import (
    PermanentProviderError,
    TransientProviderError,
    UnknownOutcomeError,
)

if TYPE_CHECKING:
    from newsletter.delivery.campaign import Campaign
    from newsletter.delivery.message import Recipient

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

    def __init__(self, campaign: Campaign, server: SMTPServer | None = None) -> None:
        self.server = server or smtp_server(campaign.config)
        self.builder = campaign.builder
        self.sender = campaign.headers.from_email
        self._secrets = secrets(campaign.config)
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
        if 200 <= code < 300:
            return _text(reply)
        if not 400 <= code < 600:
            # "OK queued as 12345", a code that means nothing: the server may well have taken
            # it, so the message is not sent again; the conversation is lost, so is the connection.
            self._drop()
            raise UnknownOutcomeError(
                f"the SMTP server {self.where} took the message and answered "
                f"{redact(_text(reply), self._secrets)!r}, which is not an SMTP reply; it may "
                "or may not be delivered"
            )
        raise self._refused("end of DATA", code, reply)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (OSError, smtplib.SMTPException):
                pass
            finally:
                self._conn = None
