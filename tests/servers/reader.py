"""The reader service as the real thing: `newsletter serve` in a subprocess, and an HTTP client.

    with ReaderServer(workspace, env) as server:
        status, headers, text = server.request("GET", "/subscribe")

The workspace's `service.url` (which the links in mails point at) must name the port before
the server starts, so `serving()` picks a free port, lets the test write it into the config,
and starts the service; if another test's server (pytest-xdist runs two workers) took the
port in between, it picks again.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from types import TracebackType

#: Starts tried before a port race is taken for something else.
PORT_ATTEMPTS = 5


class PortTaken(RuntimeError):
    """Someone bound the port between `free_port()` and the service's start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Answer:
    status: int
    headers: Message
    text: str

    def form(self, name: str = "csrf") -> str:
        found = re.search(rf'name="{name}" value="([^"]*)"', self.text)
        assert found, f"no {name} field in:\n{self.text}"
        return found[1]

    def cookie(self) -> str:
        """`name=value` of the Set-Cookie header, as a browser sends it back."""
        return self.headers.get("Set-Cookie", "").split(";", 1)[0]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class ReaderServer:
    def __init__(self, workspace: Path, env: dict[str, str], port: int = 0) -> None:
        self.workspace = workspace
        self.env = {**os.environ, **env}
        self.port = port
        self.url = ""
        self.process: subprocess.Popen[str] | None = None
        #: What the service wrote to stderr (its log), for tests to read.
        self.log = workspace / "serve.log"

    def __enter__(self) -> ReaderServer:
        with self.log.open("w") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "newsletter", "serve", "--port", str(self.port)],
                cwd=self.workspace,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"on (http://\S+)", line)
        if not found:
            self.process.kill()
            self.process.communicate()
            err = self.log.read_text()
            taken = "Address already in use" in err
            raise (PortTaken if taken else RuntimeError)(
                f"newsletter serve did not start: {line!r} {err}"
            )
        self.url = found[1]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        url = path if path.startswith("http") else self.url + path
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with _OPENER.open(req, timeout=10) as response:
                return Answer(response.status, response.headers, response.read().decode())
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.headers, error.read().decode())


@contextmanager
def serving(
    workspace: Path, env: dict[str, str], configure: Callable[[int], None]
) -> Iterator[ReaderServer]:
    """The service on a free port that `configure(port)` first writes into the config."""
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        configure(port)
        server = ReaderServer(workspace, env, port)
        try:
            server.__enter__()
        except PortTaken:
            if attempt == PORT_ATTEMPTS - 1:
                raise
            continue
        try:
            yield server
        finally:
            server.__exit__(None, None, None)
        return
