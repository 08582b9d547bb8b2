"""The ledger file itself (issue 11, item 13): an empty or foreign file is refused, not taken
for a new ledger; a send folds the write-ahead log back; `newsletter backup` copies it whole.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from tests.sending import ISSUE_ID, SECRET, workspace
from tests.workspace import SAMPLE

runner = CliRunner()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = workspace(tmp_path / "ws", 5)
    monkeypatch.chdir(root)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    return root


def ledger_path(ws: Path) -> Path:
    return ws / ".newsletter" / "ledger.sqlite"


def sent_in(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(
            conn.execute("SELECT count(*) FROM deliveries WHERE status = 'sent'").fetchone()[0]
        )
    finally:
        conn.close()


@pytest.mark.parametrize("command", [["--yes"], ["--dry-run"]])
def test_an_empty_ledger_file_is_refused_not_taken_for_a_new_one(
    ws: Path, command: list[str]
) -> None:
    ledger_path(ws).parent.mkdir()
    ledger_path(ws).touch()  # a truncated copy, say

    result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", *command])

    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "ledger.sqlite: the file is empty, so it is not a ledger" in said
    assert "restore it from a backup" in said
    assert ledger_path(ws).stat().st_size == 0
    assert not (ws / "outbox" / "new").exists()


def test_an_sqlite_file_without_a_ledgers_tables_is_refused(ws: Path) -> None:
    ledger_path(ws).parent.mkdir()
    conn = sqlite3.connect(ledger_path(ws))
    conn.execute("PRAGMA user_version = 0")
    conn.execute("VACUUM")  # a valid, empty SQLite database of some other program
    conn.close()
    result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--yes"])
    assert result.exit_code == 1
    assert "not a newsletter ledger (it has no tables)" in " ".join(result.output.split())


def test_a_send_folds_the_write_ahead_log_back_so_a_copy_of_the_file_is_whole(
    ws: Path, tmp_path: Path
) -> None:
    assert runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--yes"]).exit_code == 0
    reader = sqlite3.connect(ledger_path(ws))  # `status` in another terminal, say
    try:
        reader.execute("SELECT count(*) FROM sends").fetchone()
        (ws / "list.csv").write_text((ws / "list.csv").read_text() + "late@example.com,Late\n")
        result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--yes"])
        assert result.exit_code == 0, result.output
        copy = tmp_path / "copy.sqlite"
        shutil.copy(ledger_path(ws), copy)  # without the -wal beside it
    finally:
        reader.close()
    assert sent_in(copy) == 6


def test_backup_copies_the_ledger_whole_and_never_over_a_file(ws: Path) -> None:
    assert runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--yes"]).exit_code == 0
    reader = sqlite3.connect(ledger_path(ws))
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM sends").fetchone()  # a read open: no checkpoint
        result = runner.invoke(app, ["backup", "backups/ledger.sqlite"])
    finally:
        reader.close()
    assert result.exit_code == 0, result.output
    assert "backed up .newsletter/ledger.sqlite to backups/ledger.sqlite" in result.output
    copy = ws / "backups" / "ledger.sqlite"
    assert sent_in(copy) == 5
    assert not copy.with_name("ledger.sqlite-wal").exists()
    status = runner.invoke(app, ["--config", "newsletter.yaml", "status", ISSUE_ID])
    assert status.exit_code == 0

    again = runner.invoke(app, ["backup", "backups/ledger.sqlite"])
    assert again.exit_code == 1
    assert "already exists" in again.output
