"""`preview --serve` and `check --links` as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from tests.commands import spawned
from tests.workspace import MINIMAL_ISSUE, SAMPLE, make_workspace, write_issue


class _Links(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        code = 200 if self.path == "/fine" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def link_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Links)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_check_links_reports_broken_ones_with_their_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link_server: str
) -> None:
    ws = make_workspace(tmp_path / "ws")
    monkeypatch.chdir(ws)
    text = MINIMAL_ISSUE.replace("https://news.example.net/first", f"{link_server}/gone").replace(
        "https://news.example.net/a", f"{link_server}/fine"
    )
    write_issue(ws, "2025-08-08-links.yaml", text)
    result = CliRunner().invoke(app, ["check", "issues/2025-08-08-links.yaml", "--links"])
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert f"error: issues/2025-08-08-links.yaml:8: articles[0].url: {link_server}/gone: 404" in out
    assert "/fine" not in out
    assert "1 checked: 1 error, 0 warnings" in out


def test_preview_serve_runs_until_interrupted(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    with spawned(
        [
            sys.executable,
            "-m",
            "newsletter",
            "preview",
            SAMPLE,
            "--serve",
            "--port",
            "0",
            "--no-open",
        ],
        cwd=ws,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith(f"Previewing {SAMPLE} at http://127.0.0.1:"), line
            url = line.split(" at ")[1].split()[0]
            with urllib.request.urlopen(url, timeout=5) as response:
                page = response.read().decode()
            assert "North Koreans in Russia Face Slave-Like Conditions" in page
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "preview stopped" in out
