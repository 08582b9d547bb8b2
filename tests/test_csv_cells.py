"""What the tool writes for people to open: CSV cells a spreadsheet will not run as formulas,
and terminal lines a list cannot fill with escape sequences.

A list is outside data: a cell like `=cmd|' /C calc'!A0` that comes back in
build/*-skipped.csv or suppressions.csv is run by Excel when the editor opens the file
(OWASP: CSV injection), and `\\x1b[2J` printed as is clears their terminal.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.delivery.send import SendOptions, dry_run
from newsletter.lists.cells import neutralise, restore
from newsletter.lists.subscribers import Subscriber, read_subscribers
from newsletter.lists.suppression_csv import append_suppressions
from tests.commands import assert_clean_exit, bare_workspace, cli, said
from tests.sending import ISSUE_ID, SECRET, config, workspace
from tests.workspace import SAMPLE, write_issue

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cells(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        return [cell for row in csv.reader(fh) for cell in row]


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@A1", "'@A1"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'=1", "''=1"),
        ("'plain", "'plain"),
        ("plain", "plain"),
        ("", ""),
    ],
)
def test_one_rule_neutralises_and_restores_every_cell(cell: str, written: str) -> None:
    assert neutralise(cell) == written
    assert restore(written) == cell


def test_the_skipped_rows_file_carries_no_formula(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 1)
    evil = ["=cmd|' /C calc'!A0", "+1+2", "-3+4", "@SUM(A1)", '=HYPERLINK("http://x")']
    rows = "".join(f'"{e.replace(chr(34), chr(34) * 2)}",Evil\n' for e in evil)
    (ws / "list.csv").write_text("email,name\nreader@example.com,Ok\n" + rows, encoding="utf-8")
    report = dry_run(config(ws, {}), ws / SAMPLE, ws / "list.csv", SendOptions("outbox"))
    assert sum(report.skipped.values()) == len(evil)
    written = cells(ws / "build" / f"{ISSUE_ID}-skipped.csv")
    assert [c for c in written if c.startswith(FORMULA_START)] == []
    for e in evil:
        assert "'" + e in written  # shown as text, nothing lost


def test_suppressions_are_written_inert_and_read_back_as_the_address(tmp_path: Path) -> None:
    suppressions = tmp_path / "suppressions.csv"
    # valid addresses may start with = + - (RFC 5322 atext); a server's reason may be anything
    entries = [("=cmd@example.com", '=HYPERLINK("x")'), ("-ann@example.com", "+bounced")]
    entries.append(("'=quoted@example.com", "@reason"))
    assert append_suppressions(suppressions, entries) == 3
    written = cells(suppressions)
    assert [c for c in written if c.startswith(FORMULA_START)] == []
    listed = tmp_path / "list.csv"
    addresses = ["=cmd@example.com", "-ann@example.com", "'=quoted@example.com", "ok@example.com"]
    listed.write_text("email\n" + "\n".join(addresses) + "\n", encoding="utf-8")
    with read_subscribers(listed, suppressions=suppressions) as stream:
        kept = [r.email for r in stream if isinstance(r, Subscriber)]
    assert kept == ["ok@example.com"]  # every one of them still suppressed
    assert append_suppressions(suppressions, entries) == 0  # and known as already there


@pytest.mark.parametrize("verbose", [[], ["--verbose"]])
def test_the_terminal_gets_no_escape_sequence_from_a_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verbose: list[str]
) -> None:
    ws = workspace(tmp_path / "ws", 1)
    monkeypatch.chdir(ws)
    (ws / "list.csv").write_text(
        "email,name\nreader@example.com,Ok\n\x1b[2J\x1b]0;pwned\x07@example.com,Evil\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        app,
        ["send", SAMPLE, "--to", "list.csv", "--dry-run", *verbose],
        env={"NEWSLETTER_SECRET": SECRET},
    )
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    if verbose:
        assert "\\x1b[2J" in result.output  # shown, not obeyed


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return bare_workspace(tmp_path / "ws", monkeypatch)


def test_brackets_in_an_issue_or_a_list_are_printed_as_text(ws: Path) -> None:
    write_issue(
        ws,
        "2025-08-08-x.yaml",
        "title: '[/x] Notes [bold]this[/bold] week'\n"
        "articles:\n  - {headline: H, summary: S, url: 'https://example.org/[/y]'}\n",
    )
    (ws / "brackets.csv").write_text("email,name\nnot-an-address [/z],Ann\nbob@example.com,Bob\n")
    send = cli("send", "issues/2025-08-08-x.yaml", "--to", "brackets.csv", "--yes", "--verbose")
    assert_clean_exit(send, 0)
    assert "[/x] Notes [bold]this[/bold] week" in said(send)
    assert "not-an-address [/z]" in said(send)
    write_issue(
        ws,
        "2025-08-08-y.yaml",
        "title: T\narticles:\n  - {headline: H, summary: S, url: '[/y]'}\n",
    )
    render = cli("render", "issues/2025-08-08-y.yaml")
    assert_clean_exit(render, 1)
    assert "not an absolute http(s) URL: '[/y]'" in said(render)
