"""News pages and feeds on 127.0.0.1, shaped like real sites, for `newsletter add`'s tests.

    with PageServer() as server:
        server.url("/news/og-only")     # http://127.0.0.1:<port>/news/og-only

The pages are files in tests/data/pages/ (`{base}` in them becomes the server's address;
the feeds' dates are filled in relative to now). Besides them:

    /short/defector     301 -> /r/2 (302) -> /news/moved?utm_source=...  a redirect chain
    /go/file            302 -> file:///etc/passwd                          a hostile redirect
    /loop               302 -> /loop                                       a redirect loop
    /missing            404
    /huge               a <head> with metadata, then a body that never ends
    /slow               answers after `slow_seconds` (3 s)
    /plain.txt          text/plain, not a page
    /wait/<n>           a page after 0.3 s: how many are fetched at once

Every request is recorded in `requests` (path, User-Agent) and `hosts` (its Host
header), and the most requests in
flight at once in `max_in_flight`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data" / "pages"
PAGES = {
    "/news/og-only": ("og-only.html", "text/html; charset=utf-8"),
    "/news/jsonld-only": ("jsonld-only.html", "text/html; charset=utf-8"),
    "/news/title-only": ("title-only.html", "text/html"),
    "/news/paywall": ("paywall.html", "text/html; charset=utf-8"),
    "/news/no-alt": ("no-alt.html", "text/html; charset=UTF-8"),
    "/news/hostile": ("hostile.html", "text/html; charset=utf-8"),
    "/news/moved": ("moved.html", "text/html; charset=utf-8"),
    "/news/latin1": ("latin1.html", "text/html"),  # the charset is in the page's <meta> only
    "/feeds/rss.xml": ("rss.xml", "application/rss+xml; charset=utf-8"),
    "/feeds/atom.xml": ("atom.xml", "application/atom+xml"),
}
REDIRECTS = {
    "/short/defector": (301, "/r/2"),
    "/r/2": (302, "/news/moved?utm_source=newsletter&utm_campaign=week&ref=home"),
    "/go/file": (302, "file:///etc/passwd"),
    "/loop": (302, "/loop"),
}
HUGE_HEAD = (
    b'<!DOCTYPE html><html><head><meta charset="utf-8">'
    b'<meta property="og:title" content="The Longest Page on the Web">'
    b'<meta property="og:description" content="It goes on and on.">'
    b"</head><body>"
)


class PageServer:
    """A threaded HTTP server on 127.0.0.1 and a free port; a context manager."""

    def __init__(self, slow_seconds: float = 3.0) -> None:
        self.slow_seconds = slow_seconds
        self.requests: list[tuple[str, str]] = []
        self.hosts: list[str] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> PageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def fill(self, text: str) -> str:
        """A fixture with the server's address and dates relative to now filled in."""
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        recent, old = now - dt.timedelta(hours=20), now - dt.timedelta(days=40)
        values = {
            "{base}": self.base,
            "{rfc822_recent}": format_datetime(recent),
            "{rfc822_old}": format_datetime(old),
            "{iso_recent}": recent.isoformat().replace("+00:00", "Z"),
            "{iso_old}": old.isoformat().replace("+00:00", "Z"),
        }
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    def _enter(self, path: str, agent: str, host: str) -> None:
        with self._lock:
            self.requests.append((path, agent))
            self.hosts.append(host)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    owner: PageServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        # the client hung up: /huge and /slow are meant to be given up on
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()

    def do_GET(self) -> None:
        server = self.owner
        server._enter(self.path, self.headers.get("User-Agent", ""), self.headers.get("Host", ""))
        try:
            self._answer(server)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            server._leave()

    def _answer(self, server: PageServer) -> None:
        path = self.path.split("?")[0]
        if path in PAGES:
            name, ctype = PAGES[path]
            raw = (DATA / name).read_bytes()
            if not ctype.startswith("text/html") or b"{base}" in raw:
                raw = server.fill(raw.decode("utf-8")).encode("utf-8")
            self._send(200, ctype, raw)
        elif path in REDIRECTS:
            code, where = REDIRECTS[path]
            self.send_response(code)
            self.send_header("Location", where)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/huge":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"<p>" + b"and on " * 9000 + b"</p>\n"
            self._chunk(HUGE_HEAD)
            while not server._stop.is_set():
                self._chunk(chunk)
            self.close_connection = True
        elif path == "/slow":
            if not server._stop.wait(server.slow_seconds):
                self._send(200, "text/html", b"<title>Finally</title>")
        elif path == "/plain.txt":
            self._send(200, "text/plain; charset=utf-8", b"just text")
        elif path.startswith("/wait/"):
            time.sleep(0.3)
            n = path.rsplit("/", 1)[1]
            page = f'<meta property="og:title" content="Story {n}">'
            self._send(200, "text/html; charset=utf-8", page.encode())
        else:
            self._send(404, "text/html", b"<title>Not Found</title><h1>Page not found</h1>")

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
