"""`newsletter status`: who got an issue and who did not, read from the ledger."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from newsletter.cli import app
from newsletter.delivery.status import ORDER
from newsletter.storage.ledger import STATUSES
from tests.sending import ISSUE_ID, SECRET, workspace
from tests.servers.sendgrid import SendGridServer, drop_after_accept
from tests.workspace import SAMPLE


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env={"NEWSLETTER_SECRET": SECRET, **(env or {})})


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = workspace(tmp_path / "ws", 30, "sendgrid:\n  batch_size: 10\n  concurrent_requests: 1\n")
    monkeypatch.chdir(root)
    return root


def test_a_send_with_a_lost_answer_shows_who_is_in_doubt(
    ws: Path, sendgrid_server: SendGridServer
) -> None:
    env = {"SENDGRID_API_KEY": sendgrid_server.api_key, "SENDGRID_API_HOST": sendgrid_server.url}
    sendgrid_server.inject(drop_after_accept())  # the first batch: taken, never answered
    sent = cli("send", SAMPLE, "--to", "list.csv", "--yes", "-p", "sendgrid", env=env)
    assert sent.exit_code == 0, sent.output

    for given in (SAMPLE, ISSUE_ID):
        result = cli("status", given, env={"COLUMNS": "200"})  # the table on one line a row
        assert result.exit_code == 0, result.output
        assert "Recipients: 20 sent, 10 unknown" in result.output
        assert "finished with unknown outcomes" in result.output
        assert "10 unknown: may or may not have it; resend only with send --retry-unknown" in (
            " ".join(result.output.split())
        )

    listed = cli("status", ISSUE_ID, "--show", "unknown")
    assert listed.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(listed.output)))
    assert [r["email"] for r in rows] == [f"reader{i:05d}@example.com" for i in range(10)]
    assert {r["status"] for r in rows} == {"unknown"}
    assert all("connection was lost" in r["error"] for r in rows)
    sent_rows = list(csv.DictReader(io.StringIO(cli("status", ISSUE_ID, "--show", "sent").output)))
    assert len(sent_rows) == 20 and all(r["provider_id"] for r in sent_rows)

    data = json.loads(cli("status", ISSUE_ID, "--json").output)
    assert data["recipients"] == {
        "sent": 20,
        "unknown": 10,
        "pending": 0,
        "failed": 0,
        "rejected": 0,
    }
    (record,) = data["sends"]
    assert record["provider"] == "sendgrid" and record["status"] == "finished with unknown outcomes"
    assert record["manifest"]["list_path"] == "list.csv"
    assert record["counts"]["sent"] == 20
    assert sendgrid_server.api_key not in json.dumps(data)


def test_without_a_ledger_or_a_send_it_says_so_and_creates_nothing(ws: Path) -> None:
    result = cli("status", SAMPLE)
    assert result.exit_code == 1
    assert "nothing has been sent from this workspace" in " ".join(result.output.split())
    assert not (ws / ".newsletter" / "ledger.sqlite").exists()
    assert cli("status", SAMPLE, "--show", "sent").exit_code == 1

    assert cli("send", SAMPLE, "--to", "list.csv", "--yes").exit_code == 0  # the outbox
    other = cli("status", "2025-09-05-later")
    assert other.exit_code == 1
    said = " ".join(other.output.split())
    assert "no send of 2025-09-05-later is recorded" in said
    assert f"it has sends of {ISSUE_ID}" in said
    listed = cli("status", "2025-09-05-later", "--show", "sent")
    assert listed.exit_code == 1 and "email,status" not in listed.output


def test_a_wrong_state_is_a_usage_error(ws: Path) -> None:
    assert cli("send", SAMPLE, "--to", "list.csv", "--yes").exit_code == 0
    result = cli("status", SAMPLE, "--show", "delivered")
    assert result.exit_code == 2
    assert "use one of sent, unknown, pending, failed, rejected" in result.output
    assert "email,status" not in result.output


def test_without_an_issue_it_lists_what_is_still_to_go_out(ws: Path) -> None:
    """Nothing here, then a finished outbox send: nothing waits or is held, and that is no
    error; --show needs an issue."""
    assert cli("status").output == "Nothing waits or is scheduled to go out.\n"
    assert not (ws / ".newsletter").exists()  # it only reads
    assert cli("send", SAMPLE, "--to", "list.csv", "--yes").exit_code == 0
    result = cli("status", "--json")
    assert result.exit_code == 0 and json.loads(result.output) == {"waiting": [], "scheduled": []}
    shown = cli("status", "--show", "sent")
    assert shown.exit_code == 2 and "--show lists the recipients of one issue" in shown.output


def test_every_ledger_state_is_shown() -> None:
    assert sorted(ORDER) == sorted(STATUSES)
