"""`--json` always prints one JSON object on stdout, errors too (issue 11, item 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from tests.sending import SECRET, workspace
from tests.servers.sendgrid import SendGridServer, status
from tests.workspace import SAMPLE

runner = CliRunner()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = workspace(tmp_path / "ws", 4)
    monkeypatch.chdir(root)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    return root


def test_a_send_that_stops_on_an_error_prints_its_report_and_the_error(
    ws: Path, sendgrid_server: SendGridServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENDGRID_API_KEY", sendgrid_server.api_key)
    monkeypatch.setenv("SENDGRID_API_HOST", sendgrid_server.url)
    sendgrid_server.inject(status(401, message="authorization grant is invalid"))

    result = runner.invoke(
        app, ["send", SAMPLE, "--to", "list.csv", "--yes", "-p", "sendgrid", "--json"]
    )

    assert result.exit_code == 3
    printed = json.loads(result.stdout)
    assert printed["error"]["type"] == "SendStopped"
    assert printed["error"]["exit_code"] == 3
    assert "401" in printed["error"]["message"]
    assert (printed["sent"], printed["failed"]) == (0, 4)
    assert printed["stopped"] == printed["error"]["message"]
    assert printed["resume"] == f"newsletter send {SAMPLE} --to list.csv --provider sendgrid"
    assert sendgrid_server.api_key not in result.stdout


def test_an_error_before_sending_is_a_json_object_too(ws: Path) -> None:
    result = runner.invoke(app, ["send", SAMPLE, "--to", "missing.csv", "--yes", "--json"])
    assert result.exit_code == 1
    printed = json.loads(result.stdout)
    assert set(printed) == {"error"}
    assert "missing.csv" in printed["error"]["message"]
    assert printed["error"]["exit_code"] == 1


def test_status_json_of_an_issue_never_sent_is_a_json_error(ws: Path) -> None:
    result = runner.invoke(app, ["status", "2030-01-01-nothing", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["type"] == "NoSendError"
