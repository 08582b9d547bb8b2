"""A live preview: the issue at desktop and phone width and its text part, re-rendered on save.

    with PreviewServer(Path("issues/2025-08-01-north-korea.yaml"), config, port=0) as server:
        urlopen(server.url)            # the side-by-side page; server.version counts renders

One page on 127.0.0.1 shows the issue as the sample reader gets it: the HTML part in a
700 px and a 375 px iframe, and the text part in a `<pre>`, side by side (one column on
a narrow screen). Endpoints:

    /             the page                 (200; a problem shows as an error panel in it)
    /email.html   the HTML part alone      (503 with the problem while the issue is broken)
    /email.txt    the text part alone      (the same)
    /version      {"version": 3, "ok": true, "server": "..."}, polled by the page

A watcher thread polls the modification time and size of the issue file, `newsletter.yaml`
and every file in the template folders (the user's and the packaged ones) every 0.3 s and
re-renders when one changes. Polling rather than rendering on request keeps `/version`
cheap (the page asks twice a second), renders once per save however many tabs are open,
and needs no file-watching library; a few `stat` calls a poll cost nothing. The version
goes up only when what the page shows changes, so saving an unchanged file does not
reload the browser.

The page is templates/preview/page.html (with its style.css and reload.js), autoescaped.
It reloads itself with one small script that polls `/version`; without JavaScript
it still shows everything, and a manual reload picks up changes. A problem with the issue,
a template or the config (any `NewsletterError`) replaces the preview with a readable
panel, and the next good save brings the preview back; the server keeps running. Anything
else that goes wrong while rendering is a bug: its traceback shows in the panel.

Over 400 lines on purpose: the server, its watcher thread and its request handler share
one `Snapshot` and one shutdown sequence (stop polling, wake open connections, close the
socket) that is easiest to get right when it is read in one place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import secrets
import socket
import sys
import threading
import time
import traceback
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2

from newsletter.config import Config, load_config
from newsletter.content.issue import load_issue
from newsletter.content.render import PACKAGE_TEMPLATES, render_issue
from newsletter.delivery.message import sample_recipient
from newsletter.errors import (
    ConfigError,
    IssueError,
    NewsletterError,
    TemplateError,
    UsageError,
)
from newsletter.web.favicon import CONTENT_TYPE as ICO_TYPE
from newsletter.web.favicon import favicon_ico

HOST = "127.0.0.1"
DEFAULT_PORT = 8025
POLL_SECONDS = 0.3
#: How often the page asks `/version` whether to reload, in milliseconds.
RELOAD_POLL_MS = 500
DESKTOP_WIDTH, PHONE_WIDTH = 700, 375

Stamp = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class Preview:
    """One render of the issue for the sample reader, or the problem that stopped it."""

    title: str
    subject: str | None = None
    preheader: str | None = None
    sender: str | None = None
    html: str | None = None
    text: str | None = None
    warnings: tuple[str, ...] = ()
    problem: str | None = None  # the panel's heading
    details: tuple[str, ...] = ()  # the panel's lines

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class Snapshot:
    """What the server shows now; replaced whole when a render changes it."""

    version: int
    preview: Preview
    rendered_at: dt.datetime


def render_preview(issue_path: Path, config: Config, templates: Path | None = None) -> Preview:
    """Render the issue for the sample reader; a problem becomes a `Preview` that says so."""
    try:
        issue = load_issue(issue_path)
        rendered = render_issue(issue, config, templates)
        html_part, text_part = rendered.personalise(sample_recipient(config).fields)
    except IssueError as exc:
        return _failed(issue_path, "The issue file has problems", [str(p) for p in exc.problems])
    except TemplateError as exc:
        return _failed(issue_path, "A template failed", str(exc).splitlines())
    except ConfigError as exc:
        return _failed(issue_path, "The configuration has problems", str(exc).splitlines())
    except NewsletterError as exc:
        return _failed(issue_path, "The issue cannot be rendered", str(exc).splitlines())
    except Exception:
        # A bug (or a template raising something Jinja does not wrap): show it and keep going.
        return _failed(
            issue_path,
            "Unexpected error while rendering (a bug in newsletter or a template)",
            traceback.format_exc().splitlines(),
        )
    s = config.settings
    return Preview(
        title=issue.title,
        subject=rendered.subject,
        preheader=issue.preheader,
        sender=f"{s.from_.name or s.name} <{s.from_.email}>",
        html=html_part,
        text=text_part,
        warnings=tuple(rendered.warnings),
    )


def _failed(issue_path: Path, problem: str, details: list[str]) -> Preview:
    return Preview(title=issue_path.name, problem=problem, details=tuple(details))


class PreviewServer:
    """The preview page on 127.0.0.1, re-rendered when a watched file changes.

    A context manager: `start()` binds the port (0 picks a free one), renders once and
    starts the server and watcher threads; `close()` stops both, wakes any open
    connection and closes the socket. `poll_interval` is how often files are checked.
    """

    def __init__(
        self,
        issue_path: Path,
        config: Config,
        *,
        port: int = DEFAULT_PORT,
        templates: Path | None = None,
        poll_interval: float = POLL_SECONDS,
    ) -> None:
        self.issue_path = issue_path
        self.templates = templates
        self.poll_interval = poll_interval
        self.port = port
        self.token = secrets.token_hex(4)  # tells the page that a restarted server is new
        self._config = config
        self._config_stamp = _stamp([config.path])
        self._stamp: Stamp | None = None
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()  # guards _snapshot
        self._render_lock = threading.Lock()  # one render at a time
        self._stop = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # lifecycle

    def start(self) -> PreviewServer:
        if not self.issue_path.is_file():
            raise UsageError(f"{self.issue_path}: no such issue file")
        self._httpd = _bind(self, self.port)
        self.port = int(self._httpd.server_address[1])
        self.refresh()
        self._stop.clear()
        self._threads = [
            threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"preview-http-{self.port}",
            ),
            threading.Thread(target=self._watch, name=f"preview-watch-{self.port}"),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        """Stop the watcher and the server, and join every thread; safe to call twice."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stop.set()
        httpd.shutdown()
        httpd.wake_connections()
        httpd.server_close()  # joins the request threads
        for thread in self._threads:
            thread.join()
        self._threads = []

    def __enter__(self) -> PreviewServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    @property
    def version(self) -> int:
        return self.snapshot.version

    @property
    def snapshot(self) -> Snapshot:
        with self._lock:
            if self._snapshot is None:
                raise RuntimeError("PreviewServer.start() has not been called")
            return self._snapshot

    # watching

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self.refresh()

    def watched(self) -> list[Path]:
        """The issue, the config and every template file that could change the page."""
        files = [self.issue_path, self._config.path]
        user = self.templates if self.templates is not None else self._config.templates_dir
        for folder in (user, PACKAGE_TEMPLATES):
            if folder is None:
                continue
            if folder.is_dir():
                files += sorted(p for p in folder.rglob("*") if p.is_file() and _template(p))
            else:
                files.append(folder)  # a missing folder appearing is a change too
        return files

    def refresh(self) -> bool:
        """Re-render if a watched file changed since the last render; True if the page changed."""
        with self._render_lock:
            stamp = _stamp(self.watched())
            if stamp == self._stamp:
                return False
            self._stamp = stamp  # taken before reading: a save during the render is seen next
            preview = self._render()
            with self._lock:
                old = self._snapshot
                if old is not None and old.preview == preview:
                    return False
                version = old.version + 1 if old is not None else 1
                self._snapshot = Snapshot(version, preview, dt.datetime.now())
            return True

    def _render(self) -> Preview:
        config_stamp = _stamp([self._config.path])
        if config_stamp != self._config_stamp:
            try:
                config = load_config(self._config.path, env=self._config.env)
            except ConfigError as exc:
                # keep watching the old templates; the next save of the config retries
                return _failed(
                    self.issue_path, "newsletter.yaml has problems", str(exc).splitlines()
                )
            self._config, self._config_stamp = config, config_stamp
        return render_preview(self.issue_path, self._config, self.templates)

    # pages

    def respond(self, path: str) -> tuple[int, str, str | bytes]:
        """Status, content type and body for one GET of `path`."""
        if path == "/favicon.ico":
            return 200, ICO_TYPE, favicon_ico()
        snap = self.snapshot
        preview = snap.preview
        if path == "/":
            return 200, "text/html; charset=utf-8", page(snap, self.issue_path, self.token)
        if path == "/version":
            body = {"version": snap.version, "ok": preview.ok, "server": self.token}
            return 200, "application/json", json.dumps(body)
        if path in ("/email.html", "/email.txt"):
            part = preview.html if path == "/email.html" else preview.text
            if part is None:
                lines = [preview.problem or "not rendered", *preview.details]
                return 503, "text/plain; charset=utf-8", "\n".join(lines) + "\n"
            kind = "text/html" if path == "/email.html" else "text/plain"
            return 200, f"{kind}; charset=utf-8", part
        return 404, "text/plain; charset=utf-8", "not found: try /\n"


def serve(
    issue_path: Path,
    config: Config,
    *,
    port: int = DEFAULT_PORT,
    templates: Path | None = None,
    open_browser: bool = True,
    ready: Callable[[str], None] | None = None,
    poll_interval: float = POLL_SECONDS,
) -> None:
    """Serve the live preview until Ctrl-C, then stop cleanly and return.

    `ready(url)` is called once the page is being served (the CLI prints the URL there).
    Raises `UsageError` when the port cannot be bound or the issue file does not exist.
    """
    try:
        with PreviewServer(
            issue_path, config, port=port, templates=templates, poll_interval=poll_interval
        ) as server:
            if ready is not None:
                ready(server.url)
            if open_browser:
                webbrowser.open(server.url)
            while True:  # short sleeps, so an interrupt is seen quickly on every platform
                time.sleep(0.2)
    except KeyboardInterrupt:
        return


def _template(path: Path) -> bool:
    """Not an editor's swap, backup or temporary file, whose churn would re-render for nothing."""
    return not path.name.startswith((".", "#")) and not path.name.endswith(("~", ".swp", ".tmp"))


def _stamp(paths: list[Path]) -> Stamp:
    found = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            found.append((str(path), -1, -1))
        else:
            found.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(found)


# --- HTTP ---------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins request threads: nothing is left running
    block_on_close = True
    request_queue_size = 16  # a browser opens up to 6 connections at once

    def __init__(self, preview: PreviewServer, port: int) -> None:
        self.preview = preview
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((HOST, port), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        with self._connections_lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def wake_connections(self) -> None:
        """Unblock request threads still waiting for a request (browsers open spare sockets)."""
        with self._connections_lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a browser closing a tab mid-response is normal; anything else is a bug
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


def _bind(preview: PreviewServer, port: int) -> _HTTPServer:
    try:
        return _HTTPServer(preview, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "is in use"
        elif exc.errno == errno.EACCES:
            why = "needs privileges"
        else:
            why = f"cannot be used ({exc.strerror or exc})"
        raise UsageError(
            f"port {port} on {HOST} {why}; choose another with --port PORT (0 picks a free one)"
        ) from None


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "newsletter-preview"
    timeout = 30  # a connection that never sends a request is dropped

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        if not self._host_ok():
            # a DNS-rebinding page on another name must not read the preview
            self._send(421, "text/plain; charset=utf-8", "wrong Host\n", body)
            return
        status, content_type, text = self.server.preview.respond(urlsplit(self.path).path)
        self._send(status, content_type, text, body)

    def _host_ok(self) -> bool:
        host = self.headers.get("Host")
        if host is None:
            return True
        return host.rpartition(":")[0] in (HOST, "localhost") or host in (HOST, "localhost")

    def _send(self, status: int, content_type: str, text: str | bytes, body: bool) -> None:
        data = text.encode("utf-8") if isinstance(text, str) else text
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Library code prints nothing; the CLI says where the server is."""


# --- the page -----------------------------------------------------------------------------------


@cache
def _pages() -> jinja2.Environment:
    """The preview page's own templates (templates/preview/), which a workspace cannot
    override: it is the tool's page, not the newsletter's."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PACKAGE_TEMPLATES / "preview")),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def page(snap: Snapshot, issue_path: Path, token: str) -> str:
    """The side-by-side page, or the error panel, with the reload script."""
    return (
        _pages()
        .get_template("page.html")
        .render(
            preview=snap.preview,
            file=str(issue_path),
            version=snap.version,
            time=snap.rendered_at.strftime("%H:%M:%S"),
            desktop=DESKTOP_WIDTH,
            phone=PHONE_WIDTH,
            server=token,
            every=RELOAD_POLL_MS,
        )
    )
