"""An outbox send is a rehearsal: it is not a delivery for a real provider (issue 11, item 1)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.storage.ledger import SCHEMA_VERSION, Ledger
from tests.sending import ISSUE_ID, SECRET, workspace
from tests.servers.smtp import SMTPServer
from tests.workspace import SAMPLE

runner = CliRunner()
DATA = Path(__file__).parent / "data"


@pytest.fixture
def env(smtp_server: SMTPServer, monkeypatch: pytest.MonkeyPatch) -> SMTPServer:
    for name, value in {
        "NEWSLETTER_SECRET": SECRET,
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
    }.items():
        monkeypatch.setenv(name, value)
    return smtp_server


def received(server: SMTPServer) -> Counter[str]:
    return Counter(r for m in server.messages for r in m.rcpt_tos)


def send(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--yes", *args])
    return result.exit_code, result.output


def test_a_real_send_after_an_outbox_rehearsal_mails_everyone(
    tmp_path: Path, env: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = workspace(tmp_path / "ws", 4)
    monkeypatch.chdir(ws)
    assert send()[0] == 0  # the outbox, as the README says to start

    code, output = send("--provider", "smtp", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert (report["sent"], report["already_sent"]) == (4, 0)
    assert received(env) == {f"reader{i:05d}@example.com": 1 for i in range(4)}

    code, output = send("--provider", "smtp", "--json")  # and a real rerun mails nobody twice
    assert code == 0 and json.loads(output)["already_sent"] == 4
    assert sum(received(env).values()) == 4

    shown = runner.invoke(app, ["status", SAMPLE])
    assert "Recipients: 4 sent" in shown.output
    assert "Outbox rehearsals (not deliveries: no reader got these): 4 sent" in shown.output
    as_json = json.loads(runner.invoke(app, ["status", SAMPLE, "--json"]).output)
    assert as_json["recipients"]["sent"] == 4 and as_json["rehearsal"]["sent"] == 4


def test_an_outbox_rehearsal_does_not_publish_the_issue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = workspace(tmp_path / "ws", 2)
    monkeypatch.chdir(ws)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    assert send()[0] == 0
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert not ledger.was_sent(ISSUE_ID)
        assert ledger.counts(ISSUE_ID) == {}
        assert ledger.counts(ISSUE_ID, rehearsal=True) == {"sent": 2}


def test_a_ledger_written_by_schema_1_is_migrated_keeping_rehearsals_apart(
    tmp_path: Path, env: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/data/ledger-v1.sqlite was written by newsletter before this change: an outbox
    send to ada, bob and cy, then an SMTP send to ada (refused as "already sent") and dee."""
    ws = workspace(tmp_path / "ws", 0)
    (ws / "list.csv").write_text("email,name\nada@example.com,Ada\ndee@example.com,Dee\n")
    (ws / ".newsletter").mkdir()
    shutil.copy(DATA / "ledger-v1.sqlite", ws / ".newsletter" / "ledger.sqlite")
    monkeypatch.chdir(ws)

    code, output = send("--provider", "smtp", "--json")

    assert code == 0, output
    assert (json.loads(output)["sent"], json.loads(output)["already_sent"]) == (1, 1)
    assert received(env) == {"ada@example.com": 1}  # only the outbox had her
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {"sent": 2}
        assert ledger.counts(ISSUE_ID, rehearsal=True) == {"sent": 3}
        assert [s.provider for s in ledger.sends(ISSUE_ID)] == ["outbox", "smtp", "smtp"]
    conn = sqlite3.connect(ws / ".newsletter" / "ledger.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()
