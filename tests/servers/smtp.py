"""An SMTP server on 127.0.0.1 (aiosmtpd) that stores every message it accepts.

    with SMTPServer() as server:
        with smtplib.SMTP(server.host, server.port) as client:
            client.send_message(message)
        assert server.messages[0].message["Subject"] == "Hello"
        assert server.connections == 1

It advertises what aiosmtpd does by default (SIZE, 8BITMIME, SMTPUTF8). With `username` and
`password` it also offers AUTH PLAIN and LOGIN without TLS (it is loopback only) and refuses MAIL
with 530 until the client has logged in.

Refusals and faults:

    reject(address, code=550, message=...)   refuse that recipient at RCPT, every time.
    inject(*faults)                          faults for the next transactions, one each, in order;
    random_faults(seed, rate, kinds)         then one drawn with probability `rate`.

A transaction starts at MAIL FROM; that is where its fault is taken (a MAIL refused for want of
AUTH takes none). The kinds:

    reply(code, message, at="MAIL"|"RCPT"|"DATA")
        answer `code` instead of 250 at that stage: at RCPT, to every recipient of the
        transaction; at DATA, after the message data was received (the message is not stored).
        A 421 then closes the connection, as a server shutting down does.
        smtplib raises: MAIL -> SMTPSenderRefused, RCPT -> SMTPRecipientsRefused (if no
        recipient was accepted), DATA -> SMTPDataError; after a 421 the client is disconnected.
    drop(stored=True)
        after the message data was received, close the connection without answering: the
        unknown outcome. With stored=True (the default) the message IS stored in `messages`, as
        when a server queued it and the answer was lost; stored=False is a crash before queueing.
        smtplib raises SMTPServerDisconnected.
"""

from __future__ import annotations

import asyncio
import collections
import email
import email.message
import email.policy
import hmac
import socket
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.servers.faults import FaultPlan

HOST = "127.0.0.1"
DEFAULT_TEXTS = {
    421: "4.3.2 Service not available, closing transmission channel",
    450: "4.2.1 Mailbox busy, try again later",
    451: "4.3.0 Local error in processing, try again later",
    452: "4.3.1 Insufficient system storage",
    550: "5.1.1 Mailbox unavailable",
    554: "5.7.1 Transaction failed",
}


@dataclass(frozen=True)
class SMTPFault:
    """One misbehaviour for one transaction; build them with `reply()` and `drop()`."""

    kind: Literal["reply", "drop"]
    code: int = 0
    message: str = ""
    at: Literal["MAIL", "RCPT", "DATA"] = "DATA"
    stored: bool = True

    @property
    def label(self) -> str:
        """The key in `SMTPServer.faults_injected`: `reply_421_MAIL`, `drop`, `drop_unstored`."""
        if self.kind == "reply":
            return f"reply_{self.code}_{self.at}"
        return "drop" if self.stored else "drop_unstored"


def reply(
    code: int, message: str | None = None, *, at: Literal["MAIL", "RCPT", "DATA"] = "MAIL"
) -> SMTPFault:
    """Answer `code` at MAIL, at every RCPT, or at the end of DATA of the next transaction."""
    text = message or DEFAULT_TEXTS.get(code, "Injected failure")
    return SMTPFault("reply", code=code, message=text, at=at)


def drop(*, stored: bool = True) -> SMTPFault:
    """Close the connection at the end of DATA without answering (message stored or not)."""
    return SMTPFault("drop", stored=stored)


DEFAULT_FAULT_KINDS: tuple[SMTPFault, ...] = (
    reply(421, at="MAIL"),
    reply(451, at="MAIL"),
    reply(451, at="RCPT"),
    reply(451, at="DATA"),
    drop(),
)


@dataclass(frozen=True)
class Received:
    """One message the server accepted (or stored before a `drop`)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]  # e.g. ["SIZE=1234", "BODY=8BITMIME", "SMTPUTF8"]
    login: str | None  # the AUTH user of the session, if any

    @property
    def message(self) -> email.message.EmailMessage:
        """`data` parsed, its CRLF line ends turned into Python's \\n first."""
        text = self.data.replace(b"\r\n", b"\n")
        parsed = email.message_from_bytes(text, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


class SMTPServer:
    """aiosmtpd on 127.0.0.1 in a thread; a context manager (see the module doc)."""

    def __init__(self, *, username: str | None = None, password: str | None = None) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.host = HOST
        self.username, self.password = username, password
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._rejected: dict[str, str] = {}
        self._faults: FaultPlan[SMTPFault] = FaultPlan()
        self._connections = 0
        self._transactions = 0
        self._sessions: set[_SMTP] = set()  # the open connections, touched in the loop thread
        self._controller: _Controller | None = None
        self.port = 0

    # lifecycle

    def start(self) -> SMTPServer:
        listener = socket.create_server((HOST, 0))
        self.port = listener.getsockname()[1]
        auth: dict[str, Any] = {}
        if self.username is not None:
            auth = {"authenticator": self._authenticate, "auth_require_tls": False}
        controller = _Controller(self, listener, server_hostname="smtp.loopback", **auth)
        try:
            controller.start()
        except BaseException:
            listener.close()
            raise
        self._controller = controller
        with self._lock:
            self._connections = 0  # the controller's own probe at start is not a client
        return self

    def close(self) -> None:
        """Close every client connection, then stop the loop and join its thread."""
        controller, self._controller = self._controller, None
        if controller is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close_sessions(), controller.loop).result(5)
        finally:
            controller.stop()

    def __enter__(self) -> SMTPServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def _close_sessions(self) -> None:
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        while self._sessions:
            await asyncio.sleep(0.001)

    # refusals and faults

    def reject(self, address: str, code: int = 550, message: str | None = None) -> None:
        """Refuse `address` (case-insensitive) at RCPT with `code`, from now on."""
        with self._lock:
            self._rejected[address.casefold()] = f"{code} {message or DEFAULT_TEXTS.get(code, '')}"

    def inject(self, *faults: SMTPFault) -> None:
        """Queue faults for the next transactions, one each, in order."""
        self._faults.inject(*faults)

    def random_faults(
        self, seed: int, rate: float, kinds: Sequence[SMTPFault] = DEFAULT_FAULT_KINDS
    ) -> None:
        """After the queue is empty, give each transaction a fault drawn from `kinds` with
        probability `rate`, reproducibly for `seed` (rate 0 turns it off)."""
        self._faults.random(seed, rate, kinds)

    # what happened (snapshots)

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> int:
        """TCP connections clients opened since start."""
        return self._connections

    @property
    def transactions(self) -> int:
        """MAIL FROM commands that got as far as taking a fault (or not)."""
        return self._transactions

    @property
    def faults_injected(self) -> collections.Counter[str]:
        return self._faults.injected

    # called in the loop thread

    def _connected(self, session: _SMTP) -> None:
        with self._lock:
            self._connections += 1
        self._sessions.add(session)

    def _refusal(self, address: str) -> str | None:
        with self._lock:
            return self._rejected.get(address.casefold())

    def _store(self, received: Received) -> None:
        with self._lock:
            self._messages.append(received)

    def _next_fault(self) -> SMTPFault | None:
        with self._lock:
            self._transactions += 1
        return self._faults.draw()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.username is not None and self.password is not None
        ok = (
            isinstance(data, LoginPassword)
            and hmac.compare_digest(data.login, self.username.encode())
            and hmac.compare_digest(data.password, self.password.encode())
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


def _answer(server: SMTP, fault: SMTPFault) -> str:
    if fault.code == 421:  # after the reply is written, as aiosmtpd does for its own 421s
        assert server.transport is not None
        server.loop.call_soon(server.transport.close)
    return f"{fault.code} {fault.message}"


class _Handler:
    """aiosmtpd's hooks: refusals, faults, and storing what is accepted (in the loop thread)."""

    def __init__(self, owner: SMTPServer) -> None:
        self.owner = owner
        # The fault of each session's open transaction.
        self._pending: weakref.WeakKeyDictionary[Session, SMTPFault] = weakref.WeakKeyDictionary()

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.owner.username is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        fault = self.owner._next_fault()
        self._pending.pop(session, None)
        if fault is not None and fault.kind == "reply" and fault.at == "MAIL":
            return _answer(server, fault)
        if fault is not None:
            self._pending[session] = fault
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = self.owner._refusal(address)
        if refusal is not None:
            return refusal
        fault = self._pending.get(session)
        if fault is not None and fault.kind == "reply" and fault.at == "RCPT":
            return _answer(server, fault)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = self._pending.pop(session, None)
        if fault is not None and fault.kind == "reply":
            return _answer(server, fault)
        assert envelope.mail_from is not None and isinstance(envelope.content, bytes)
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        received = Received(
            envelope.mail_from,
            list(envelope.rcpt_tos),
            envelope.content,
            list(envelope.mail_options),
            login,
        )
        if fault is None or fault.stored:
            self.owner._store(received)
        if fault is not None:  # drop: no answer; connection_lost() cancels this coroutine
            assert server.transport is not None
            server.transport.close()
            await asyncio.get_running_loop().create_future()
        return "250 OK"


class _SMTP(SMTP):
    """aiosmtpd's SMTP, telling the owner when a connection opens and when it is gone."""

    def __init__(self, owner: SMTPServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.owner._connected(self)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            self.owner._sessions.discard(self)


class _Controller(Controller):
    """Serves on a socket bound beforehand to port 0, so there is no race for a free port."""

    def __init__(self, owner: SMTPServer, listener: socket.socket, **kwargs: Any) -> None:
        super().__init__(_Handler(owner), hostname=HOST, port=listener.getsockname()[1], **kwargs)
        self.owner, self.listener = owner, listener

    def factory(self) -> SMTP:
        return _SMTP(self.owner, self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self.listener)
