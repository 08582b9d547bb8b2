"""A full disk or an unwritable file during a send (issue 11, item 12): the first error wins,
cleanup never hides it, nothing is left in build/, the send row ends `stopped`; a hard
bounce that cannot be written to suppressions.csv stays in the ledger and is applied next.

The full disk is /dev/full, which answers every write with ENOSPC, linked where the send
writes its skipped-rows log: the real code path, no patching.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import load_config
from newsletter.storage.ledger import Ledger
from newsletter.storage.store import open_store
from tests.commands import smtp_env
from tests.sending import ISSUE_ID, SECRET, readers, workspace
from tests.servers.sendgrid import SendGridServer, status
from tests.servers.smtp import SMTPServer
from tests.workspace import SAMPLE

runner = CliRunner()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = workspace(tmp_path / "ws", 0)
    monkeypatch.chdir(root)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    return root


def full_skip_log(ws: Path) -> None:
    """The skipped-rows log's temporary file on a full disk."""
    (ws / "build").mkdir()
    (ws / "build" / f".{ISSUE_ID}-skipped.csv.tmp").symlink_to("/dev/full")


def send_row(ws: Path) -> str:
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        (send,) = ledger.sends(ISSUE_ID)
    return send.status


def test_a_full_disk_for_the_skipped_rows_is_one_clear_error(ws: Path) -> None:
    bad = "".join(f"not-an-address-{i},Someone\n" for i in range(400))  # > one write buffer
    (ws / "list.csv").write_text(readers(3) + bad, encoding="utf-8")
    full_skip_log(ws)

    result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--yes"])

    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert f"build/{ISSUE_ID}-skipped.csv: cannot write the skipped rows" in said
    assert "No space left on device" in said
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert send_row(ws) == "stopped"
    assert [p.name for p in (ws / "build").iterdir()] == []  # no .tmp left behind


def test_cleanup_on_a_full_disk_does_not_hide_the_error_that_stopped_the_send(
    ws: Path, sendgrid_server: SendGridServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ws / "list.csv").write_text(readers(3) + "not-an-address,X\n", encoding="utf-8")
    full_skip_log(ws)  # a few bytes: the failure comes when the log is closed, at the end
    monkeypatch.setenv("SENDGRID_API_KEY", sendgrid_server.api_key)
    monkeypatch.setenv("SENDGRID_API_HOST", sendgrid_server.url)
    sendgrid_server.inject(status(403, message="the key may not send mail"))

    result = runner.invoke(
        app, ["send", SAMPLE, "--to", "list.csv", "--yes", "-p", "sendgrid", "--json"]
    )

    assert result.exit_code == 3, result.output  # the provider's refusal, not the disk's
    assert result.exception is None or isinstance(result.exception, SystemExit)
    said = " ".join(result.stderr.split())
    assert "error: " in said and "403" in said
    assert "No space left on device" not in said.split("warning:")[0]
    report = json.loads(result.stdout)
    assert report["error"]["exit_code"] == 3
    assert any("No space left on device" in w for w in report["warnings"])
    assert send_row(ws) == "stopped"
    assert [p.name for p in (ws / "build").iterdir()] == []


@contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """`path` cannot be written: read-only, and immutable if we are root (who ignores modes)."""
    path.chmod(0o444)
    immutable = os.geteuid() == 0
    if immutable:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o644)


def test_a_hard_bounce_that_cannot_be_suppressed_is_kept_and_applied_next_time(
    ws: Path, smtp_server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in smtp_env(smtp_server.port).items():
        monkeypatch.setenv(name, value)
    (ws / "list.csv").write_text(readers(3), encoding="utf-8")
    assert runner.invoke(app, ["audience", "list"]).exit_code == 0  # creates the store
    store_file = ws / ".newsletter" / "audience.sqlite"
    smtp_server.reject("reader00001@example.com", 550)
    args = ["send", SAMPLE, "--to", "list.csv", "--yes", "-p", "smtp"]

    with unwritable(store_file):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        said = " ".join(result.output.split())
        assert "could not add 1 hard-bounced address(es) to the suppressions" in said
        assert "the ledger keeps them" in said

        # another issue, the store still unwritable: the bounced reader is not mailed
        shutil.copy(ws / SAMPLE, ws / "issues" / "2025-08-08-next.yaml")
        other = ws / "issues" / "2025-08-08-next.yaml"
        other.write_text(other.read_text().replace("date: 2025-08-01", "date: 2025-08-08"))
        before = len(smtp_server.messages)
        nxt = runner.invoke(
            app,
            ["send", "issues/2025-08-08-next.yaml", "--to", "list.csv", "--yes", "-p", "smtp"],
        )
        assert nxt.exit_code == 0, nxt.output
        assert sorted(r for m in smtp_server.messages[before:] for r in m.rcpt_tos) == [
            "reader00000@example.com",
            "reader00002@example.com",
        ]

    again = runner.invoke(app, [*args, "--dry-run"])  # writable again: nothing to refuse
    assert again.exit_code == 0
    assert runner.invoke(app, args).exit_code == 0  # already sent to everyone: applies it
    with open_store(load_config(ws / "newsletter.yaml")) as store:
        assert [s.email for s in store.suppressions()] == ["reader00001@example.com"]
