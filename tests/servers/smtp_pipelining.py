"""A small SMTP server on 127.0.0.1 that advertises PIPELINING (RFC 2920); aiosmtpd does not.

    with PipeliningServer(end_replies={3: DROP}) as server:
        ...  # send; the third message is stored, then the connection closes unanswered
        assert server.connections == 2

Like a real pipelining server it answers everything that arrived in one read in one
write, and counts the replies of each write in `flushes`: a client that pipelines shows
writes of several replies, one that does not shows writes of one.

    pipelining=False          do not advertise PIPELINING (answers are still grouped per read)
    smtputf8=True             advertise SMTPUTF8 (RFC 6531); without it, a non-ASCII address
                              at RCPT TO or SMTPUTF8 at MAIL FROM is answered 553 / 555
    end_replies={n: line}     the raw line (no code needed: "OK queued as 12345") answered at
                              the end of DATA of the n-th message (counted from 1 over the
                              server's life) instead of "250 2.0.0 Ok: queued as N" (a 4xx or
                              5xx line does not keep the message); DROP: store the message,
                              write what was already answered, then close. A 421 anywhere
                              closes the connection after it is written.
    rcpt_replies={addr: line} the raw line answered at RCPT TO for that address, every time
    mail_replies={n: line}    the raw line answered at the n-th MAIL FROM (counted from 1)
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"
#: In `end_replies`: close the connection after storing the message, without answering it.
DROP = "<drop>"


@dataclass
class Message:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float = field(default_factory=time.monotonic)  # when its end of DATA came


@dataclass
class _Session:
    mail_from: str | None = None
    rcpt_tos: list[str] = field(default_factory=list)
    in_data: bool = False
    lines: list[bytes] = field(default_factory=list)


class _Protocol(asyncio.Protocol):
    def __init__(self, server: PipeliningServer) -> None:
        self.server = server
        self.buffer = b""
        self.session = _Session()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections += 1
        self.server.transports.add(transport)
        transport.write(b"220 pipelining.loopback ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        replies: list[bytes] = []
        while b"\r\n" in self.buffer and not self.transport.is_closing():
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            reply = self.line(line)
            if reply is DROP:
                self._flush(replies)
                self.transport.close()
                return
            if reply is not None:
                replies.append(reply.encode() + b"\r\n")
                if reply.startswith("421"):  # closing, as a server shutting down does
                    self._flush(replies)
                    self.transport.close()
                    return
        self._flush(replies)

    def _flush(self, replies: list[bytes]) -> None:
        if replies and self.transport is not None:
            self.server.flushes.append(len(replies))
            self.transport.write(b"".join(replies))

    def line(self, line: bytes) -> str | None:
        s, server = self.session, self.server
        if s.in_data:
            if line != b".":
                s.lines.append(line[1:] if line.startswith(b".") else line)
                return None
            server.received += 1
            n = server.received
            answer = server.end_replies.get(n, f"250 2.0.0 Ok: queued as Q{n}")
            if not answer.startswith(("4", "5")):  # refused messages are not kept
                data = b"\r\n".join(s.lines) + b"\r\n"
                server.messages.append(Message(s.mail_from or "", list(s.rcpt_tos), data))
            self.session = _Session()
            return answer
        verb, _, arg = line.decode("utf-8", "replace").partition(" ")
        verb = verb.upper()
        if verb == "EHLO":
            extensions = ["PIPELINING"] if server.pipelining else []
            extensions += ["SIZE 50000000", "8BITMIME"]
            extensions += ["SMTPUTF8"] if server.smtputf8 else []
            head = "".join(f"250-{e}\r\n" for e in ["pipelining.loopback", *extensions[:-1]])
            return f"{head}250 {extensions[-1]}"
        if verb == "HELO":
            return "250 pipelining.loopback"
        if verb == "MAIL":
            server.mails += 1
            if server.mails in server.mail_replies:
                return server.mail_replies[server.mails]
            if s.mail_from is not None:
                return "503 5.5.1 Error: nested MAIL command"
            if "SMTPUTF8" in arg.upper().split() and not server.smtputf8:
                return "555 5.5.4 SMTPUTF8 is not supported"
            s.mail_from = arg.partition(":")[2].strip().split(" ")[0].strip("<>")
            return "250 2.1.0 Ok"
        if verb == "RCPT":
            if s.mail_from is None:
                return "503 5.5.1 Error: need MAIL command"
            address = arg.partition(":")[2].strip().strip("<>")
            if not address.isascii() and not server.smtputf8:
                return "553 5.6.7 non-ASCII address without SMTPUTF8"
            if address in server.rcpt_replies:
                return server.rcpt_replies[address]
            s.rcpt_tos.append(address)
            return "250 2.1.5 Ok"
        if verb == "DATA":
            if not s.rcpt_tos:
                return "554 5.5.1 Error: no valid recipients"
            s.in_data = True
            return "354 End data with <CR><LF>.<CR><LF>"
        if verb == "RSET":
            self.session = _Session()
            return "250 2.0.0 Ok"
        if verb == "NOOP":
            return "250 2.0.0 Ok"
        if verb == "QUIT":
            assert self.transport is not None
            self.transport.write(b"221 2.0.0 Bye\r\n")
            self.transport.close()
            return None
        return "502 5.5.2 Error: command not recognized"


class PipeliningServer:
    """The server in a thread with its own event loop; a context manager."""

    def __init__(
        self,
        *,
        pipelining: bool = True,
        smtputf8: bool = False,
        end_replies: dict[int, str] | None = None,
        rcpt_replies: dict[str, str] | None = None,
        mail_replies: dict[int, str] | None = None,
    ) -> None:
        self.pipelining = pipelining
        self.smtputf8 = smtputf8
        self.end_replies = end_replies or {}
        self.rcpt_replies = rcpt_replies or {}
        self.mail_replies = mail_replies or {}
        self.messages: list[Message] = []
        self.flushes: list[int] = []
        self.connections = 0
        self.transports: set[asyncio.Transport] = set()
        self.received = 0
        self.mails = 0
        self.host = HOST
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    def __enter__(self) -> PipeliningServer:
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)

            async def serve() -> None:
                self._server = await self._loop.create_server(lambda: _Protocol(self), HOST, 0)
                self.port = self._server.sockets[0].getsockname()[1]
                started.set()

            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="pipelining-smtp", daemon=True)
        self._thread.start()
        started.wait(5)
        return self

    def __exit__(self, *exc: Any) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for transport in self.transports:
                transport.abort()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop.close()

    def recipients(self) -> list[str]:
        return [r for m in self.messages for r in m.rcpt_tos]
