"""What a real send refuses or calls a failure before or after mailing (issue 11, items 2-4):
the `check` preflight, the same issue under another file name, and a send that mails nobody.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.errors import ExitCode
from tests.sending import SECRET, workspace
from tests.sending import cli_send as send
from tests.servers.sendgrid import SendGridServer, drop_after_accept
from tests.workspace import SAMPLE

runner = CliRunner()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = workspace(tmp_path / "ws", 3)
    monkeypatch.chdir(root)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    return root


def outbox_count(ws: Path) -> int:
    new = ws / "outbox" / "new"
    return len(list(new.iterdir())) if new.exists() else 0


# item 3: send runs `check`


def test_an_issue_fresh_from_new_is_refused_until_its_todos_are_written(ws: Path) -> None:
    made = runner.invoke(app, ["new", "Fresh one", "--date", "2025-09-05"])
    assert made.exit_code == 0, made.output
    issue = "issues/2025-09-05-fresh-one.yaml"

    code, output = send(issue, "--yes")

    assert code == ExitCode.ERROR
    assert "refusing to send 2025-09-05-fresh-one" in output
    assert "subject: leftover placeholder 'TODO'" in output
    assert "add --force" in output
    assert outbox_count(ws) == 0

    code, output = send(issue, "--dry-run")  # the dry run says the same
    assert code == ExitCode.ERROR
    assert "a send would refuse: issues/2025-09-05-fresh-one.yaml:5: subject" in output

    code, output = send(issue, "--yes", "--force")
    assert code == 0, output
    assert outbox_count(ws) == 3


def test_a_javascript_link_is_refused(ws: Path) -> None:
    issue = ws / SAMPLE
    text = issue.read_text()
    issue.write_text(text.replace("summary: ", "summary: See [this](javascript:alert(1)). ", 1))

    code, output = send(SAMPLE, "--yes")

    assert code == ExitCode.ERROR
    assert "'javascript:alert(1)' is not an absolute http(s) URL" in output
    assert outbox_count(ws) == 0


def test_checks_warnings_are_shown_before_the_confirmation(ws: Path) -> None:
    """The confirmation prints the dry run's report: the same warnings `check` gives."""
    code, output = send(SAMPLE, "--dry-run")
    assert code == 0, output
    assert "warning: issues/2025-08-01-north-korea.yaml:14: articles[0].url:" in output
    assert "is a placeholder link" in output


# item 2: a renamed issue file


def test_a_renamed_issue_file_is_refused_unless_it_is_said_to_be_new(ws: Path) -> None:
    assert send(SAMPLE, "--yes", "--provider", "outbox")[0] == 0  # a rehearsal does not count
    shutil.copy(ws / SAMPLE, ws / "issues" / "2025-08-01-nk.yaml")
    assert send("issues/2025-08-01-nk.yaml", "--yes")[0] == 0
    # a real send, by hand: the SMTP test server is not needed to prove the refusal
    from newsletter.storage.ledger import Ledger

    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        (first,) = ledger.sends("2025-08-01-north-korea")
        real = dataclasses.replace(first.manifest, provider="smtp")
        send_id = ledger.start_send(real)
        batch = ledger.begin_batch(send_id, "2025-08-01-north-korea", [("a@x.org", "a@x.org")])
        ledger.finish_batch(batch, "sent")
        ledger.finish_send(send_id, status="finished", counts={"sent": 1})

    code, output = send("issues/2025-08-01-nk.yaml", "--yes", "--provider", "smtp")
    assert code == ExitCode.ERROR
    assert "already sent as 2025-08-01-north-korea (send 3," in output
    assert "the same file content" in output and "--as-new-issue" in output

    retitled = ws / "issues" / "2025-08-01-renamed.yaml"
    retitled.write_text((ws / SAMPLE).read_text().replace("Ten stories", "10 stories"))
    code, output = send("issues/2025-08-01-renamed.yaml", "--dry-run", "--provider", "smtp")
    assert code == ExitCode.ERROR
    assert "the same date and title" in output

    code, output = send("issues/2025-08-01-nk.yaml", "--dry-run", "--as-new-issue", "-p", "smtp")
    assert code == 0, output
    assert "warning: sending as a new issue (--as-new-issue) though this issue was" in output


# item 4: a send that mails nobody


def test_a_list_where_every_row_is_skipped_exits_4(ws: Path) -> None:
    (ws / "list.csv").write_text("email,name\nnot-an-address,X\nalso bad,Y\n")
    code, output = send(SAMPLE, "--yes")
    assert code == ExitCode.NOTHING_SENT == 4
    assert "every one of the 2 rows of list.csv was skipped (2 invalid address)" in output
    assert "nobody was mailed" in output


def test_a_tag_that_matches_no_one_exits_4(ws: Path) -> None:
    (ws / "list.csv").write_text("email,name,tags\nann@example.com,Ann,weekly\n")
    result = runner.invoke(
        app, ["send", SAMPLE, "--to", "list.csv", "--yes", "--tag", "wekly", "--json"]
    )
    assert result.exit_code == 4
    report = json.loads(result.stdout)
    assert report["sent"] == 0 and report["error"]["exit_code"] == 4
    assert "--tag wekly: check the spelling" in report["error"]["message"]


def test_already_sent_to_everyone_is_a_success(ws: Path) -> None:
    assert send(SAMPLE, "--yes")[0] == 0
    code, output = send(SAMPLE, "--yes")
    assert code == 0, output
    assert "3 already sent" in output


def test_a_send_where_every_outcome_is_unknown_exits_4(
    ws: Path, sendgrid_server: SendGridServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENDGRID_API_KEY", sendgrid_server.api_key)
    monkeypatch.setenv("SENDGRID_API_HOST", sendgrid_server.url)
    sendgrid_server.inject(drop_after_accept())
    code, output = send(SAMPLE, "--yes", "--provider", "sendgrid")
    assert code == 4, output
    assert "nobody was mailed: of 3 recipients, 3 have an unknown outcome" in output
