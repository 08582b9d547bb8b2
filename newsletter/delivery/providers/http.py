"""Keep-alive HTTP(S) connections for an API provider: one per sending thread.

A new connection per request costs a TCP and TLS handshake each time: `bench/tls_reuse.py`
measured connections kept open 23% faster locally and 32% faster 50 ms away. What keeping
them must never cost is a second mail or a lost answer, so a request is written at most
twice, and only when the first write provably reached nobody:

- a connection the server closed while it sat idle (its keep-alive timeout) is noticed
  before anything is written on it, since its socket is readable (the end of the stream, or
  bytes nobody asked for), and a new one is opened instead;
- if writing on a kept connection fails all the same (the server closed it in the instant
  between), the request is written again on a new connection, once: a server acts on a
  request only once it has the whole body (Content-Length), and a write that failed did not
  hand the whole of it over. Failing again, or failing on a new connection, is `NotSent`;
- once the whole request is written, any failure to read its answer is `AnswerLost`: the
  server may have acted on it, and it is never written again.

`http.client` follows no redirects, so the key never goes anywhere but `base_url`.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass


class NotSent(Exception):
    """The request was not written whole: nobody can have acted on it."""


class AnswerLost(Exception):
    """The request was written whole, but its answer was not read: it may have been acted on."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


class Connections:
    """Connections to one host, one per thread that posts, kept open between requests."""

    def __init__(self, base_url: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        # One TLS context for every connection: loading the CA certificates is the slow part.
        self._context = ssl.create_default_context() if self.https else None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[http.client.HTTPConnection] = []

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST `body` to `path`; see the module's docstring for what each error means."""
        connection, kept = self._connection()
        try:
            connection.request("POST", self.prefix + path, body=body, headers=dict(headers))
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            if not kept:
                raise NotSent(_why(exc)) from exc
            try:  # a kept connection the server had just closed: once more, on a new one
                connection.request("POST", self.prefix + path, body=body, headers=dict(headers))
            except (OSError, http.client.HTTPException) as again:
                connection.close()
                raise NotSent(_why(again)) from again
        try:
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise AnswerLost(_why(exc)) from exc
        return Answer(response.status, response.headers, data)

    def close(self) -> None:
        """Close every connection (once no request is out)."""
        with self._lock:
            for connection in self._all:
                connection.close()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it is open from an earlier request."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            if self._context is not None:
                connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self._context
                )
            else:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        if connection.sock is not None and _closed_while_idle(connection.sock):
            connection.close()  # the next request opens a new one
        return connection, connection.sock is not None


def _closed_while_idle(sock: socket.socket) -> bool:
    """Whether an idle connection can no longer take a request: between requests nothing
    should arrive, so a readable socket holds the end of the stream or stray bytes."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        readable, _writable, _errors = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _why(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
