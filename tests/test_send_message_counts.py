"""The counts main's send messages print agree with their nouns (console.plural): a list of
one bad row, an issue already mailed to one reader under another id."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.errors import ExitCode
from newsletter.storage.ledger import Ledger
from tests.sending import SECRET, workspace
from tests.sending import cli_send as send
from tests.workspace import SAMPLE

runner = CliRunner()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = workspace(tmp_path / "ws", 1)
    monkeypatch.chdir(root)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    return root


def test_a_list_of_one_skipped_row_says_so_in_the_singular(ws: Path) -> None:
    (ws / "list.csv").write_text("email,name\nnot-an-address,X\n")
    code, output = send(SAMPLE, "--yes")
    assert code == ExitCode.NOTHING_SENT
    assert "the only row of list.csv was skipped (1 invalid address)" in output
    assert "1 rows" not in output


def test_a_renamed_issue_mailed_to_one_reader_counts_one_recipient(ws: Path) -> None:
    assert send(SAMPLE, "--yes")[0] == 0  # an outbox rehearsal, for its manifest
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:  # a real send to one reader
        (first,) = ledger.sends("2025-08-01-north-korea")
        send_id = ledger.start_send(dataclasses.replace(first.manifest, provider="smtp"))
        batch = ledger.begin_batch(send_id, "2025-08-01-north-korea", [("a@x.org", "a@x.org")])
        ledger.finish_batch(batch, "sent")
        ledger.finish_send(send_id, status="finished", counts={"sent": 1})
    shutil.copy(ws / SAMPLE, ws / "issues" / "2025-08-01-renamed.yaml")

    code, output = send("issues/2025-08-01-renamed.yaml", "--dry-run", "--provider", "smtp")

    assert code == ExitCode.ERROR
    assert "1 recipient mailed)" in output
    assert "1 recipients" not in output
