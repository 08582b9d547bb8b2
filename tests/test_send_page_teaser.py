"""A page's teaser that `newsletter add` put in an issue stops a send until it is rewritten.

`add` marks the publisher's words `summary_from: page`; `check` calls that an error, and
`send` refuses `check`'s errors unless --force, with the outbox (a rehearsal) and with a
real provider alike. The pages come from a real HTTP server on 127.0.0.1 and the SMTP
send goes to a real server on 127.0.0.1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.errors import ExitCode
from tests.commands import smtp_env
from tests.sending import SECRET, workspace
from tests.servers.pages import PageServer
from tests.servers.smtp import SMTPServer
from tests.workspace import SAMPLE

runner = CliRunner()
READERS = 3


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A workspace whose sample issue ends with an article `add` took from a page."""
    root = workspace(tmp_path / "ws", READERS)
    monkeypatch.chdir(root)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    with PageServer() as pages:
        added = runner.invoke(
            app, ["add", "--allow-local", "--issue", SAMPLE, pages.url("/news/og-only")]
        )
    assert added.exit_code == 0, added.output
    assert "    summary_from: page\n" in (root / SAMPLE).read_text(encoding="utf-8")
    yield root


def send(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", *args])
    return result.exit_code, " ".join(result.output.split())


def marker_line(ws: Path) -> int:
    lines = (ws / SAMPLE).read_text(encoding="utf-8").splitlines()
    return lines.index("    summary_from: page") + 1


def outbox_count(ws: Path) -> int:
    new = ws / "outbox" / "new"
    return len(list(new.iterdir())) if new.exists() else 0


def test_an_outbox_send_refuses_the_pages_teaser_until_forced(ws: Path) -> None:
    where = f"{SAMPLE}:{marker_line(ws)}: articles["

    code, output = send("--yes")

    assert code == ExitCode.ERROR, output
    assert "refusing to send 2025-08-01-north-korea" in output
    assert where in output and "].summary_from: the summary is the page's own teaser" in output
    assert "add --force" in output
    assert outbox_count(ws) == 0

    code, output = send("--yes", "--force")
    assert code == 0, output
    assert outbox_count(ws) == READERS


def test_an_smtp_send_refuses_the_pages_teaser_until_forced(
    ws: Path, smtp_server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in smtp_env(smtp_server.port).items():
        monkeypatch.setenv(name, value)

    code, output = send("--provider", "smtp", "--yes")

    assert code == ExitCode.ERROR, output
    assert "summary_from: the summary is the page's own teaser" in output
    assert smtp_server.messages == []

    code, output = send("--provider", "smtp", "--yes", "--force")
    assert code == 0, output
    received = Counter(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert received == {f"reader{i:05d}@example.com": 1 for i in range(READERS)}


def test_once_the_marker_is_deleted_the_send_goes_out(ws: Path) -> None:
    path = ws / SAMPLE
    path.write_text(
        path.read_text(encoding="utf-8").replace("    summary_from: page\n", ""), encoding="utf-8"
    )

    code, output = send("--yes")

    assert code == 0, output
    assert "summary_from" not in output
    assert outbox_count(ws) == READERS
