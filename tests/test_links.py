"""The link check, against a real HTTP server on 127.0.0.1 with one route per kind of answer."""

from __future__ import annotations

import collections
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from newsletter.content.issue import load_issue
from newsletter.content.links import USER_AGENT, Hop, LinkResult, Place, check_links, issue_links

TIMEOUT = 1.0


class LinkServer:
    """Routes for every outcome; counts requests by (method, path) and how many run at once."""

    def __init__(self, gate: int = 0) -> None:
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.agents: set[str] = set()
        self.in_flight = self.max_in_flight = 0
        self.release = threading.Event()  # lets the slow route finish when the server closes
        self.gate = threading.Barrier(gate) if gate else None
        self._lock = threading.Lock()
        self._httpd = _Server(self)
        self.port = int(self._httpd.server_address[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}
        )

    def __enter__(self) -> LinkServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        if self.gate is not None:
            self.gate.abort()
        self._httpd.shutdown()
        self._httpd.server_close()  # joins the request threads
        self._thread.join()

    def answer(self, method: str, path: str) -> tuple[int, dict[str, str]]:
        with self._lock:
            self.requests[(method, path)] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._route(method, path)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _route(self, method: str, path: str) -> tuple[int, dict[str, str]]:
        redirects = {"/moved": (301, "/landing"), "/loop": (302, "/loop")}
        if path in redirects:
            code, target = redirects[path]
            return code, {"Location": self.base + target}
        if path == "/no-head":
            return (405 if method == "HEAD" else 200), {}
        if path == "/head-404":
            return (404 if method == "HEAD" else 200), {}
        if path == "/slow":
            self.release.wait(10)
            return 200, {}
        if path.startswith("/gate/"):
            assert self.gate is not None
            try:
                self.gate.wait(timeout=5)
            except threading.BrokenBarrierError:
                return 500, {}
            return 200, {}
        fixed = {
            "/ok": 200,
            "/landing": 200,
            "/photo.jpg": 200,
            "/caf%C3%A9": 200,
            "/missing": 404,
            "/error": 500,
            "/limited": 429,
            "/forbidden": 403,
        }
        code = fixed.get(path, 404)
        return code, ({"Retry-After": "120"} if code == 429 else {})


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    request_queue_size = 64  # the default 5 drops a burst of 8 connects: SYN resent after 1 s

    def __init__(self, owner: LinkServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """The slow route writes to a client that gave up long ago: expected."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_HEAD(self) -> None:
        self._reply("HEAD")

    def do_GET(self) -> None:
        self._reply("GET")

    def _reply(self, method: str) -> None:
        owner = self.server.owner
        owner.agents.add(self.headers.get("User-Agent", ""))
        code, headers = owner.answer(method, self.path)
        body = f"{code}\n".encode()
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method == "GET":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours *_proxy variables; 127.0.0.1 must be reached directly."""
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def server() -> Iterator[LinkServer]:
    with LinkServer() as running:
        yield running


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_issue(tmp_path: Path, articles: list[tuple[str, str]], intro: str = "") -> Path:
    lines = ["title: Links", "date: 2025-08-08"]
    if intro:
        lines.append(f"intro: {intro}")
    lines.append("articles:")
    for url, summary in articles:
        lines += [
            f"  - headline: Story at {url}",
            f"    summary: {summary or 'A summary.'}",
            f"    url: {url}",
        ]
    path = tmp_path / "2025-08-08-links.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def line_of(path: Path, text: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def by_url(results: list[LinkResult]) -> dict[str, LinkResult]:
    return {r.url: r for r in results}


def test_every_kind_of_answer_is_classified(server: LinkServer, tmp_path: Path) -> None:
    b = server.base
    refused = f"http://127.0.0.1:{closed_port()}/gone"
    urls = [
        f"{b}/ok",
        f"{b}/moved",
        f"{b}/missing",
        f"{b}/error",
        f"{b}/no-head",
        f"{b}/head-404",
        f"{b}/slow",
        refused,
        f"{b}/limited",
        f"{b}/forbidden",
        f"{b}/loop",
        f"{b}/café",
    ]
    path = write_issue(
        tmp_path,
        [(url, "") for url in urls] + [(f"{b}/ok#again", f"Also [here]({b}/ok#part).")],
        intro=f"See [the home page]({b}/ok) and [write](mailto:x@example.org).",
    )
    seen: list[LinkResult] = []
    results = check_links(load_issue(path), timeout=TIMEOUT, on_result=seen.append)
    got = by_url(results)

    assert sorted(seen, key=results.index) == results
    assert [r.url for r in results] == [f"{b}/ok", *urls[1:]]  # file order, each URL once
    assert {url: r.outcome for url, r in got.items()} == {
        f"{b}/ok": "ok",
        f"{b}/moved": "redirected",
        f"{b}/missing": "broken",
        f"{b}/error": "broken",
        f"{b}/no-head": "ok",
        f"{b}/head-404": "ok",
        f"{b}/slow": "broken",
        refused: "broken",
        f"{b}/limited": "unknown",
        f"{b}/forbidden": "unknown",
        f"{b}/loop": "broken",
        f"{b}/café": "ok",
    }

    assert [got[f"{b}/{p}"].level for p in ("ok", "moved", "missing", "limited")] == [
        None,
        "info",
        "error",
        "warning",
    ]

    ok = got[f"{b}/ok"]
    assert (ok.status, ok.final_url, ok.method, ok.message) == (200, f"{b}/ok", "HEAD", "200 OK")
    assert ok.ok and not ok.redirects
    assert [str(p) for p in ok.places] == [
        f"{path}:3: intro",
        f"{path}:{line_of(path, f'url: {b}/ok')}: articles[0].url",
        f"{path}:{line_of(path, 'Also [here]')}: articles[12].summary",
        f"{path}:{line_of(path, f'url: {b}/ok#again')}: articles[12].url",
    ]

    moved = got[f"{b}/moved"]
    assert moved.ok and moved.status == 200
    assert moved.final_url == f"{b}/landing"
    assert moved.redirects == (Hop(301, f"{b}/landing"),)
    assert moved.permanent
    assert moved.message == f"301 -> {b}/landing (200 OK); update the link"
    assert moved.where == f"{path}:{line_of(path, f'url: {b}/moved')}: articles[1].url"

    missing = got[f"{b}/missing"]
    assert (missing.status, missing.method, missing.error) == (404, "GET", None)
    assert missing.message == "404 Not Found" and not missing.ok
    assert got[f"{b}/error"].message == "500 Internal Server Error"
    assert (got[f"{b}/no-head"].status, got[f"{b}/no-head"].method) == (200, "GET")

    slow = got[f"{b}/slow"]
    assert (slow.status, slow.error) == (None, f"no answer within {TIMEOUT:g} s")
    assert got[refused].error == "connection refused" and got[refused].status is None

    limited = got[f"{b}/limited"]
    assert (limited.status, limited.method) == (429, "HEAD")  # not asked again with a GET
    assert limited.error == "rate limited, check again later; Retry-After: 120"
    assert limited.message == f"429 Too Many Requests ({limited.error})"
    assert got[f"{b}/forbidden"].status == 403
    assert "open it in a browser" in (got[f"{b}/forbidden"].error or "")
    assert got[f"{b}/loop"].error == "too many redirects (a redirect loop?)"

    # each URL once: HEAD, and a GET only after a HEAD answer of 400 or more (but not 429)
    once = {key: n for key, n in server.requests.items() if key[1] != "/loop"}
    assert once == {
        ("HEAD", "/ok"): 1,
        ("HEAD", "/moved"): 1,
        ("HEAD", "/landing"): 1,  # the redirect kept the HEAD
        ("HEAD", "/missing"): 1,
        ("GET", "/missing"): 1,
        ("HEAD", "/error"): 1,
        ("GET", "/error"): 1,
        ("HEAD", "/no-head"): 1,
        ("GET", "/no-head"): 1,
        ("HEAD", "/head-404"): 1,
        ("GET", "/head-404"): 1,
        ("HEAD", "/slow"): 1,
        ("HEAD", "/limited"): 1,
        ("HEAD", "/forbidden"): 1,
        ("GET", "/forbidden"): 1,
        ("HEAD", "/caf%C3%A9"): 1,
    }
    assert server.agents == {USER_AGENT}


def test_checks_run_concurrently_and_no_more_than_workers(tmp_path: Path) -> None:
    # A barrier of 3 releases requests only three at a time: a sequential check would stall.
    with LinkServer(gate=3) as server:
        urls = [f"{server.base}/gate/{i}" for i in range(6)]
        issue = load_issue(write_issue(tmp_path, [(u, "") for u in urls]))
        results = check_links(issue, timeout=10, workers=3)
    assert [r.outcome for r in results] == ["ok"] * 6
    assert server.max_in_flight == 3


def test_an_issue_without_links_checks_nothing(tmp_path: Path) -> None:
    path = tmp_path / "2025-08-08-none.yaml"
    path.write_text(
        "title: T\narticles:\n  - headline: H\n    summary: S\n    url: http://127.0.0.1:9/x\n"
    )
    issue = load_issue(path)
    assert [url for url, _ in issue_links(issue)] == ["http://127.0.0.1:9/x"]
    assert check_links(issue.model_copy(update={"articles": []})) == []


def test_issue_links_lists_every_place_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "2025-08-08-places.yaml"
    path.write_text(
        """\
title: Places
intro: Read [this](https://a.example/intro) and [mail us](mailto:x@example.org).
sections:
  - title: One
    intro: "[Relative](/nope) and ![a chart](https://a.example/chart.png)"
    articles:
      - headline: H
        summary: See [the report](https://a.example/report).
        url: https://a.example/story
        image:
          url: https://a.example/photo.jpg
          alt: A photo
""",
        encoding="utf-8",
    )
    found = [(url, str(place)) for url, place in issue_links(load_issue(path))]
    assert found == [
        ("https://a.example/intro", f"{path}:2: intro"),
        ("https://a.example/chart.png", f"{path}:5: sections[0].intro"),
        ("https://a.example/report", f"{path}:8: sections[0].articles[0].summary"),
        ("https://a.example/story", f"{path}:9: sections[0].articles[0].url"),
        ("https://a.example/photo.jpg", f"{path}:11: sections[0].articles[0].image.url"),
    ]
    assert str(Place("x.yaml", None, "intro")) == "x.yaml: intro"
