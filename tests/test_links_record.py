"""`newsletter links`: each link of an issue with what the last `check --links` found."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from tests.servers.pages import PageServer
from tests.workspace import make_workspace, write_issue

runner = CliRunner()


@pytest.fixture
def pages() -> Iterator[PageServer]:
    with PageServer() as server:
        yield server


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_workspace(tmp_path / "ws")
    monkeypatch.chdir(root)
    return root


def issue_text(pages: PageServer, *paths: str) -> str:
    items = "".join(
        f"  - headline: Story {i}\n    summary: Words.\n    url: {pages.url(p)}\n"
        for i, p in enumerate(paths)
    )
    return f"title: Links\ndate: 2025-08-08\narticles:\n{items}"


def test_links_shows_the_last_check_and_what_was_never_checked(ws: Path, pages: PageServer) -> None:
    write_issue(ws, "2025-08-08-links.yaml", issue_text(pages, "/news/og-only", "/missing"))
    result = runner.invoke(app, ["links", "issues/2025-08-08-links.yaml"])
    assert result.exit_code == 0, result.output
    assert f"{pages.url('/news/og-only')}  not checked" in result.output
    assert "2 links: 0 broken, 2 not checked; run `newsletter check --links`" in result.output

    checked = runner.invoke(app, ["check", "--links", "issues/2025-08-08-links.yaml"])
    assert checked.exit_code == 1
    record = json.loads((ws / ".newsletter" / "links.json").read_text(encoding="utf-8"))
    assert record[pages.url("/missing")]["outcome"] == "broken"

    write_issue(
        ws,
        "2025-08-08-links.yaml",
        issue_text(pages, "/news/og-only", "/missing", "/news/no-alt"),
    )
    result = runner.invoke(app, ["links", "issues/2025-08-08-links.yaml"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{pages.url('/news/og-only')}  ok 200 OK (20")
    assert lines[1] == "  issues/2025-08-08-links.yaml:6: articles[0].url"
    assert lines[2].startswith(f"{pages.url('/missing')}  broken 404 Not Found (20")
    assert lines[4] == f"{pages.url('/news/no-alt')}  not checked"
    assert lines[-1] == (
        "3 links: 1 broken, 1 not checked; run `newsletter check --links` to check them"
    )


def test_a_later_check_updates_the_record(ws: Path, pages: PageServer) -> None:
    path = write_issue(ws, "2025-08-08-links.yaml", issue_text(pages, "/missing"))
    runner.invoke(app, ["check", "--links", str(path)])
    path.write_text(issue_text(pages, "/news/og-only"), encoding="utf-8")
    runner.invoke(app, ["check", "--links", str(path)])
    record = json.loads((ws / ".newsletter" / "links.json").read_text(encoding="utf-8"))
    assert set(record) == {pages.url("/missing"), pages.url("/news/og-only")}
    assert record[pages.url("/news/og-only")]["outcome"] == "ok"
