"""SMTP with the standard library: a few connections, each carrying a batch of messages.

`smtplib` opens, secures and logs in; the messages themselves go as MAIL, RCPT, DATA
written by hand, so that each message's fate can be placed:

- anything refused or lost before a message's body is on the wire means it was not
  delivered, and is safe to send again;
- a body on the wire whose answer never came (the connection lost, or an answer that is
  no SMTP reply) is an unknown outcome, never retried blindly;
- a 2xx after the body is a delivery.

When the server offers PIPELINING (RFC 2920) the commands are not waited for one by one:
MAIL, RCPT and DATA go in one write, and a message's body and its end go with the next
message's MAIL, RCPT and DATA, so each message costs one round trip instead of four. To a
relay across the internet that is most of the time a send takes.

Over 400 lines: the exchange written by hand, with and without pipelining, and the
placing of each message's fate in it are one protocol, read best in one place.
"""

from __future__ import annotations

import contextlib
import functools
import smtplib
import ssl
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from newsletter.config import RateText, env_secret, redact
from newsletter.content.issue import Line
from newsletter.delivery.providers.base import CampaignView, Marks, ProviderSpec, Sent, section
from newsletter.errors import (
    ConfigError,
    LedgerError,
    NewsletterError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from newsletter.lists.addresses import NO_SMTPUTF8, smtp_address

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
    #: Connections open at once (listmonk's max_conns): each carries its own messages.
    connections: int = Field(default=4, ge=1, le=32)
    #: The relay's cap on messages, e.g. "10/s", "600/min", "50000/day"; empty: none.
    rate_limit: RateText | None = None


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
    #: Connections open at once, each carrying one batch at a time.
    connections: int = 4
    #: MAIL FROM for (recipient, issue): the bounce address, or its signed VERP form.
    return_path: Callable[[str, str], str] | None = field(default=None, compare=False)


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
        connections=s.connections,
        return_path=_return_path(config),
    )


def _return_path(config: Config) -> Callable[[str, str], str]:
    """Where bounces go; with `bounces.verp`, signed per recipient and issue. Tried once here
    so that a VERP send without NEWSLETTER_SECRET is a readiness problem, not a stopped send."""
    from newsletter.lists.verp import envelope_sender

    envelope_sender(config, "reader@example.org", "issue")
    return functools.partial(envelope_sender, config)


PROVIDER = ProviderSpec(
    name="smtp",
    ready=smtp_server,
    open=lambda campaign, server, sandbox: SMTPProvider(campaign, server),
    settings=SMTPSettings,
    secret_names=("SMTP_PASSWORD",),
    batch_size=lambda config: BATCH_SIZE,
    rate_limit=lambda config: section(config, "smtp", SMTPSettings).rate_limit,
    spread=True,
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
#: Messages per batch: one connection carries them one after the other, and each batch
#: costs one round trip more than its messages. Each message is marked in the ledger as it
#: leaves, so the size costs nothing at a kill; a short list is spread over every connection.
BATCH_SIZE = 50
_MAX_LINE = 8192
_MAX_REPLY_LINES = 100


def _text(reply: bytes | str, secrets: list[str]) -> str:
    """A server's words, fit to show and keep: secrets redacted first, then cut to one short
    line. Cut first, a secret at the cut would lose the end that lets redact find it."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(redact(text, secrets).split())[:300]


def _raw(reply: bytes) -> str:
    return reply.decode("utf-8", "replace")


def _reply(conn: smtplib.SMTP) -> tuple[int, str]:
    """One reply, read line by line: (-1, the line) when it carries no code. The text is
    as the server sent it (bounded by the line limits): `_text` makes it fit to show.

    `smtplib.getreply` drops the first four characters of a line it cannot parse, so the
    person reading the error would see `ueued as 12345` for `OK queued as 12345`.
    """
    if conn.file is None:
        if conn.sock is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        conn.file = conn.sock.makefile("rb")
    lines: list[bytes] = []
    while len(lines) < _MAX_REPLY_LINES:
        line = conn.file.readline(_MAX_LINE)
        if not line:
            raise smtplib.SMTPServerDisconnected("the connection closed")
        lines.append(line)
        if not (line[:3].isdigit() and line[3:4] == b"-"):
            break
    first = lines[0]
    if not (first[:3].isdigit() and first[3:4] in (b" ", b"-", b"\r", b"\n", b"")):
        return -1, _raw(b" ".join(lines))
    return int(first[:3]), _raw(b" ".join(line[4:] for line in lines))


@dataclass
class _Connection:
    smtp: smtplib.SMTP
    pipelining: bool
    smtputf8: bool


@dataclass
class _Outcome:
    """What became of each message of one batch, as it happens."""

    ids: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    hard: set[str] = field(default_factory=set)
    unknown: dict[str, str] = field(default_factory=dict)
    unsent: dict[str, str] = field(default_factory=dict)
    error: ProviderError | None = None

    def sent(self) -> Sent:
        return Sent(
            provider_id=None,
            rejected=self.rejected,
            hard_bounces=frozenset(self.hard),
            provider_ids=self.ids,
            unknown=self.unknown,
            unsent=self.unsent,
            error=self.error,
        )


@dataclass
class _Message:
    recipient: Recipient
    #: The address for RCPT TO: as it is, or with its domain in xn-- form (`smtp_address`).
    address: str
    message_id: str
    body: bytes  # dot-stuffed, CRLF, ending in CRLF . CRLF


class SMTPProvider:
    name = "smtp"
    batch_size = BATCH_SIZE
    #: `send` takes `marks`: each message is marked in the ledger as it leaves and as it is
    #: accepted, so a process killed mid-batch leaves only the messages in flight unknown.
    marks_each_message = True

    def __init__(self, campaign: CampaignView, server: SMTPServer) -> None:
        self.server = server
        #: Connections open at once, each carrying one batch at a time.
        self.concurrency = server.connections
        self.builder = campaign.builder
        self.sender = campaign.headers.from_email
        self.issue_id = campaign.issue_id
        self._secrets = campaign.secrets
        self._lock = threading.Lock()
        self._idle: list[_Connection] = []
        self._tls: ssl.SSLContext | None = None

    @property
    def where(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    def _context(self) -> ssl.SSLContext:
        """One TLS context for every connection: making one loads the CA certificates, tens
        of milliseconds of CPU, which several connections opening at once would queue for."""
        with self._lock:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            return self._tls

    def _open(self) -> smtplib.SMTP:
        s = self.server
        context = self._context() if s.security != "none" else None
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

    def _connect(self) -> _Connection:
        try:
            conn = self._open()
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentProviderError(
                f"the SMTP server {self.where} refused the login for {self.server.user!r} "
                f"({exc.smtp_code} {_text(exc.smtp_error, self._secrets)}); "
                "check SMTP_USER and SMTP_PASSWORD",
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
        return _Connection(conn, conn.has_extn("pipelining"), conn.has_extn("smtputf8"))

    def _take(self) -> _Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def send(self, batch: Sequence[Recipient], marks: Marks | None = None) -> Sent:
        """Send each message of the batch down one connection; say what became of each."""
        outcome = _Outcome()
        messages: deque[_Message] = deque()
        conn = self._take()
        try:
            for recipient in batch:  # built before anything is sent: a refused header sends none
                address = smtp_address(recipient.email, smtputf8=conn.smtputf8)
                if address is None:  # set aside, not a failed connection: the rest go on
                    if marks is not None:
                        marks.pending(recipient)  # a rejected key needs its row in the batch
                    outcome.rejected[recipient.key] = NO_SMTPUTF8
                    continue
                message_id = self.builder.message_id()
                body = self.builder.build_wire(recipient, message_id=message_id)
                if not body.endswith(b"\r\n"):
                    body += b"\r\n"
                messages.append(_Message(recipient, address, message_id, body + b".\r\n"))
            alive = self._transfer(conn, messages, outcome, marks)
        except BaseException:
            self._close(conn)
            raise
        if alive:
            with self._lock:
                self._idle.append(conn)
        else:
            self._close(conn)
        return outcome.sent()

    def _transfer(
        self, conn: _Connection, todo: deque[_Message], outcome: _Outcome, marks: Marks | None
    ) -> bool:
        """The conversation for one batch; whether the connection may carry the next one.

        Every answer to a write is read before the next write, so between two writes no
        message is in doubt: that is where a ledger error may stop the batch.
        """
        smtp = conn.smtp
        ready: _Message | None = None  # its DATA was answered 354: its body goes next
        while True:
            body_of, ready = ready, None
            nxt = None
            if todo and outcome.error is None and (conn.pipelining or body_of is None):
                nxt = todo.popleft()
                if marks is not None:
                    try:
                        marks.pending(nxt.recipient)  # may wait for the rate limit
                    except NewsletterError as exc:  # the cap for today, the ledger: stop here
                        todo.appendleft(nxt)
                        nxt = None
                        outcome.error = (
                            exc
                            if isinstance(exc, ProviderError)
                            else PermanentProviderError(str(exc))
                        )
            if body_of is None and nxt is None:
                self._unsent(todo, outcome)  # the batch stopped on an error: the rest wait
                break
            answered = False
            try:
                out = [body_of.body] if body_of else []
                if nxt is not None and conn.pipelining:
                    out += [self._mail(nxt), self._rcpt(nxt), b"DATA\r\n"]
                if out:
                    smtp.send(b"".join(out))
                if body_of is not None:
                    code, text = _reply(smtp)
                    answered = True
                    if not self._delivered(body_of, code, text, outcome, marks):
                        if nxt is not None:
                            outcome.unsent[nxt.recipient.key] = "not sent: the connection closed"
                        self._unsent(todo, outcome)
                        return False
                if nxt is not None:
                    ready, keep = self._envelope(conn, nxt, outcome)
                    if not keep:
                        self._unsent(todo, outcome)
                        return False
            except (OSError, smtplib.SMTPServerDisconnected) as exc:
                lost = type(exc).__name__
                if body_of is not None and not answered:
                    outcome.unknown[body_of.recipient.key] = (
                        f"the SMTP server {self.where} took the message but the connection was "
                        f"lost before it answered ({lost}); it may or may not be delivered"
                    )
                if nxt is not None and nxt.recipient.key not in outcome.rejected:
                    outcome.unsent[nxt.recipient.key] = "not sent: the connection was lost"
                if outcome.error is None:
                    outcome.error = TransientProviderError(
                        f"the SMTP server {self.where} closed the connection before the message "
                        f"was sent ({lost}); nothing was delivered"
                    )
                self._unsent(todo, outcome)
                return False
        return True

    def _mail(self, message: _Message) -> bytes:
        utf8 = b" SMTPUTF8" if not message.address.isascii() else b""
        path = self.server.return_path
        sender = path(message.recipient.email, self.issue_id) if path else self.sender
        return b"MAIL FROM:<" + sender.encode() + b">" + utf8 + b"\r\n"

    def _rcpt(self, message: _Message) -> bytes:
        return b"RCPT TO:<" + message.address.encode() + b">\r\n"

    def _envelope(
        self, conn: _Connection, message: _Message, outcome: _Outcome
    ) -> tuple[_Message | None, bool]:
        """Read (or, without PIPELINING, send and read) MAIL, RCPT and DATA for one message.

        Returns the message if its body may go next, and whether the connection is still good.
        """
        smtp = conn.smtp
        if conn.pipelining:
            replies = [_reply(smtp), _reply(smtp), _reply(smtp)]
        else:
            replies = []
            for command in (self._mail(message), self._rcpt(message), b"DATA\r\n"):
                smtp.send(command)
                replies.append(_reply(smtp))
                if replies[-1][0] not in (250, 251, 354):
                    break
        (mail, mail_text), *rest = replies
        rcpt, rcpt_text = rest[0] if rest else (0, "")
        data, data_text = rest[1] if len(rest) > 1 else (0, "")
        key = message.recipient.key
        if data == 354 and not (mail == 250 and rcpt in (250, 251)):
            # a server that opened DATA with no recipient: end the empty transaction
            smtp.send(b".\r\n")
            _reply(smtp)
        if mail == 250 and rcpt in (250, 251) and data == 354:
            return message, True
        if mail == 250 and 500 <= rcpt < 600:
            outcome.rejected[key] = f"{rcpt} {_text(rcpt_text, self._secrets)}"
            if rcpt in HARD_BOUNCE:
                outcome.hard.add(key)
            return None, self._reset(smtp)
        code, text, stage = (
            (mail, mail_text, "MAIL FROM")
            if mail != 250
            else (rcpt, rcpt_text, "RCPT TO")
            if rcpt not in (250, 251)
            else (data, data_text, "DATA")
        )
        outcome.unsent[key] = f"{code} {_text(text, self._secrets)}"
        outcome.error = self._refused(stage, code, text)
        return None, 400 <= code < 600 and code != 421 and self._reset(smtp)

    def _delivered(
        self, message: _Message, code: int, text: str, outcome: _Outcome, marks: Marks | None
    ) -> bool:
        """Record the answer to a message's body; whether the conversation can go on."""
        key = message.recipient.key
        if 200 <= code < 300:
            outcome.ids[key] = f"{message.message_id} {_text(text, self._secrets)}"
            if marks is not None:
                # if this fails the batch's settlement records it; if that fails too, the
                # message stays pending and becomes unknown: never sent again blindly
                with contextlib.suppress(LedgerError):
                    marks.sent(key, outcome.ids[key])
            return True
        if 400 <= code < 600:
            outcome.unsent[key] = f"{code} {_text(text, self._secrets)}"
            if outcome.error is None:
                outcome.error = self._refused("end of DATA", code, text)
            return code != 421
        # "OK queued as 12345", a code that means nothing: the server may well have taken it,
        # so it is not sent again; and the conversation is lost, so is the connection.
        outcome.unknown[key] = (
            f"the SMTP server {self.where} took the message and answered "
            f"{_text(text, self._secrets)!r}, which is not an SMTP reply; it may or may not "
            "be delivered"
        )
        if outcome.error is None:
            outcome.error = TransientProviderError(
                f"the SMTP server {self.where} answered something that is not an SMTP reply"
            )
        return False

    def _unsent(self, todo: deque[_Message], outcome: _Outcome) -> None:
        while todo:
            outcome.unsent[todo.popleft().recipient.key] = "not sent: the batch stopped early"

    def _reset(self, smtp: smtplib.SMTP) -> bool:
        try:
            smtp.send(b"RSET\r\n")
            return _reply(smtp)[0] == 250
        except (OSError, smtplib.SMTPServerDisconnected):
            return False

    def _refused(
        self, stage: str, code: int, reply: str
    ) -> TransientProviderError | PermanentProviderError:
        answer = _text(reply, self._secrets)
        text = f"the SMTP server {self.where} answered {code} {answer} at {stage}"
        if 400 <= code < 500 or code < 0:
            return TransientProviderError(text, status=code)
        return PermanentProviderError(text + "; fix what it says before sending again", status=code)

    def _close(self, conn: _Connection) -> None:
        with contextlib.suppress(OSError):
            conn.smtp.close()

    def close(self) -> None:
        """QUIT on every connection at once, then read the answers: one round trip in all,
        not one per connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        said = []
        for conn in idle:
            try:
                conn.smtp.send(b"QUIT\r\n")
                said.append(conn)
            except (OSError, smtplib.SMTPException):
                self._close(conn)
        for conn in said:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                _reply(conn.smtp)
            self._close(conn)
