"""Sending through the outbox: the whole flow with no account, as `make demo` runs it."""

from __future__ import annotations

import email
import email.policy
import json
import mailbox
from email.message import EmailMessage
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import load_config
from newsletter.delivery.send import SendOptions, dry_run, send_issue
from newsletter.storage.ledger import Ledger
from tests.workspace import SAMPLE, make_workspace

runner = CliRunner()

LIST = """\
email,name,first_name,tags,status,city
ann@example.com,Ann Lee,,weekly;asia,subscribed,Oslo
bob@example.org,,Bob,weekly,,Lima
carol@example.net,"Carol ""C"" <Díaz>",,asia,subscribed,
not-an-address,,,weekly,,
ANN@example.com,Ann again,,,,
dave@example.com,Dave,,,unsubscribed,
"""


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_workspace(tmp_path / "ws")
    (root / "list.csv").write_text(LIST, encoding="utf-8")
    monkeypatch.chdir(root)
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    return root


def outbox(ws: Path) -> list[EmailMessage]:
    box = mailbox.Maildir(ws / "outbox", create=False)
    messages = []
    for key in box.iterkeys():
        raw = box.get_bytes(key)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        messages.append(parsed)
    return messages


def test_send_to_the_outbox_once_each_personalised(ws: Path) -> None:
    result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--yes"])
    assert result.exit_code == 0, result.output
    messages = outbox(ws)
    to = sorted(m["To"].addresses[0].addr_spec for m in messages)
    assert to == ["ann@example.com", "bob@example.org", "carol@example.net"]
    by_address = {m["To"].addresses[0].addr_spec: m for m in messages}
    ann = by_address["ann@example.com"]
    html = ann.get_body(("html",)).get_content()
    text = ann.get_body(("plain",)).get_content()
    assert "Hi Ann Lee," in html and "Hi Ann Lee," in text
    assert "Hi Bob," in by_address["bob@example.org"].get_body(("plain",)).get_content()
    carol = by_address["carol@example.net"].get_body(("html",)).get_content()
    assert "Hi Carol &quot;C&quot; &lt;Díaz&gt;," in carol
    assert "token=" in ann["List-Unsubscribe"]
    assert "Mail landed in outbox/new/" in result.output
    assert "3 rows: 1 invalid address, 1 duplicate, 1 unsubscribed" in " ".join(
        result.output.split()
    )


def test_rerun_mails_nobody_twice(ws: Path) -> None:
    assert runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--yes"]).exit_code == 0
    (ws / "list.csv").write_text(LIST + "erin@example.com,Erin,,,,\n", encoding="utf-8")
    result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--yes", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["sent"] == 1 and report["already_sent"] == 3
    assert report["warnings"] == []  # the same issue and templates as the first send
    assert sorted(m["To"].addresses[0].addr_spec for m in outbox(ws)) == [
        "ann@example.com",
        "bob@example.org",
        "carol@example.net",
        "erin@example.com",
    ]
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts("2025-08-01-north-korea", rehearsal=True) == {"sent": 4}
        sends = ledger.sends("2025-08-01-north-korea")
    assert len(sends) == 2
    assert sends[0].manifest.list_sha256 != sends[1].manifest.list_sha256
    assert sends[1].manifest.provider == "outbox" and sends[1].counts["sent"] == 1


def test_a_changed_issue_or_template_is_said_before_the_rest_are_mailed(ws: Path) -> None:
    """A send stopped half way, a typo fixed, the send resumed: the editor is told who has
    which version, in the dry run, the confirmation and the report."""
    (ws / "first.csv").write_text(LIST.split("carol")[0], encoding="utf-8")  # ann and bob
    assert runner.invoke(app, ["send", SAMPLE, "--to", "first.csv", "--yes"]).exit_code == 0
    issue = ws / SAMPLE
    issue.write_text(issue.read_text().replace("Ten stories", "Eleven stories"))

    plan = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--dry-run"])
    said = " ".join(plan.output.split())
    assert plan.exit_code == 0, plan.output
    assert "warning: the issue file changed since send 1 (" in said
    assert "which mailed 2 recipients: they have the earlier version" in said

    custom = ws / "my-templates"
    custom.mkdir()
    (custom / "email.txt").write_text("{{ issue.title }}\n{{ unsubscribe_url }}\n")
    # --force: these bare templates lack the postal address, which `check` calls an error.
    args = ["send", SAMPLE, "--to", "list.csv", "--yes", "--json", "--force"]
    args += ["--templates", str(custom)]
    report = json.loads(runner.invoke(app, args).output)
    assert report["sent"] == 1  # carol
    (warning,) = report["warnings"]
    assert warning.startswith("the issue file and the templates changed since send 1 (")
    assert "which mailed 2 recipients" in warning

    again = json.loads(runner.invoke(app, args).output)
    assert again["sent"] == 0
    assert len(again["warnings"]) == 1 and "since send 1 " in again["warnings"][0]


def test_a_dry_run_tells_how_far_through_the_list_it_is(ws: Path) -> None:
    """A million rows take seconds to check: the CLI shows a bar while it waits."""
    from tests.sending import readers

    (ws / "big.csv").write_text(readers(2500), encoding="utf-8")
    calls: list[tuple[int, int | None]] = []
    config = load_config(ws / "newsletter.yaml", env={})
    report = dry_run(
        config,
        ws / SAMPLE,
        ws / "big.csv",
        SendOptions(provider="outbox"),
        on_progress=lambda done, total: calls.append((done, total)),
    )
    assert report.rows == 2500
    assert calls == [(1000, 2500), (2000, 2500), (2500, 2500)]


def test_dry_run_sends_nothing_and_writes_previews(ws: Path) -> None:
    result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert not (ws / "outbox").exists()
    assert not (ws / ".newsletter" / "ledger.sqlite").exists()
    out = " ".join(result.output.split())
    assert "Would send 3 in 3 batches" in out
    previews = sorted((ws / "build" / "preview" / "2025-08-01-north-korea").iterdir())
    assert [p.name for p in previews] == [
        "01-ann@example.com.eml",
        "02-bob@example.org.eml",
        "03-carol@example.net.eml",
        "index.html",
        "index.txt",
    ]
    first = email.message_from_bytes(previews[0].read_bytes(), policy=email.policy.default)
    assert first["To"] == "Ann Lee <ann@example.com>"
    assert "Hi Ann Lee," in previews[3].read_text()


def test_skipped_rows_are_listed_with_line_and_reason(ws: Path) -> None:
    result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--dry-run", "--verbose"])
    assert result.exit_code == 0, result.output
    assert "line 5: not-an-address: invalid address: An email address must have an @-sign." in (
        result.output
    )
    assert "line 6: ANN@example.com: duplicate: duplicate of line 2" in result.output
    assert "line 7: dave@example.com: unsubscribed" in result.output
    skipped = (ws / "build" / "2025-08-01-north-korea-skipped.csv").read_text().splitlines()
    assert skipped[0] == "line,email,reason,detail"
    assert [row.split(",")[0] for row in skipped[1:]] == ["5", "6", "7"]


def test_tags_filter_the_list(ws: Path) -> None:
    config = load_config(ws / "newsletter.yaml", env={})
    report = dry_run(
        config,
        ws / SAMPLE,
        ws / "list.csv",
        SendOptions(provider="outbox", tags=("asia",)),
        previews=0,
    )
    assert report.to_send == 2
    assert report.skipped["not tagged"] == 1


def test_json_report_is_machine_readable(ws: Path) -> None:
    result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--dry-run", "--json"])
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["to_send"] == 3 and report["dry_run"] is True
    assert report["skipped"] == {"invalid address": 1, "duplicate": 1, "unsubscribed": 1}
    assert report["skipped_rows"][0] == {
        "line": 5,
        "email": "not-an-address",
        "reason": "invalid address",
        "detail": "An email address must have an @-sign.",
    }


def test_test_to_sends_one_marked_copy_and_records_no_delivery(ws: Path) -> None:
    result = runner.invoke(app, ["send", SAMPLE, "--test-to", "editor@example.org"])
    assert result.exit_code == 0, result.output
    (message,) = outbox(ws)
    assert message["Subject"].startswith("[TEST] North Korea this week")
    assert message["To"] == "editor@example.org"
    # The real send still mails everyone.
    assert runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--yes"]).exit_code == 0
    assert len(outbox(ws)) == 4


def test_a_real_send_without_a_terminal_needs_yes(ws: Path) -> None:
    result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv"])
    assert result.exit_code == 2
    assert "without a terminal, add --yes" in result.output
    assert not (ws / "outbox").exists()


def test_send_needs_a_list(ws: Path) -> None:
    result = runner.invoke(app, ["send", SAMPLE])
    assert result.exit_code == 2
    assert "--to LIST.csv" in result.output


def test_unknown_provider_is_a_usage_error(ws: Path) -> None:
    result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--provider", "pigeon"])
    assert result.exit_code == 2
    assert "choose one of outbox, smtp, sendgrid" in result.output


def test_templates_using_a_missing_column_are_refused(ws: Path) -> None:
    custom = ws / "t"
    custom.mkdir()
    (custom / "email.txt").write_text("Hello from {{ subscriber.country }}\n")
    result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--yes", "--templates", "t"])
    assert result.exit_code == 1
    assert "the templates use subscriber.country but list.csv has no 'country' column" in (
        " ".join(result.output.split())
    )
    assert not (ws / "outbox").exists()


def test_extra_columns_personalise(ws: Path) -> None:
    custom = ws / "t"
    custom.mkdir()
    (custom / "email.txt").write_text(
        "Hello from {{ subscriber.get('city', 'somewhere') }}\n"
        "{{ unsubscribe_url }} {{ newsletter.postal_address }}\n"
    )
    config = load_config(ws / "newsletter.yaml", env={})
    send_issue(
        config, ws / SAMPLE, ws / "list.csv", SendOptions(provider="outbox", templates=custom)
    )
    texts = {
        m["To"].addresses[0].addr_spec: m.get_body(("plain",)).get_content() for m in outbox(ws)
    }
    assert texts["ann@example.com"].startswith("Hello from Oslo\n")
    assert texts["carol@example.net"].startswith("Hello from somewhere\n")


def test_real_providers_need_the_token_secret(ws: Path) -> None:
    result = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--yes", "-p", "smtp"])
    assert result.exit_code == 1
    assert "NEWSLETTER_SECRET is not set" in result.output
    dry = runner.invoke(app, ["send", SAMPLE, "--to", "list.csv", "--dry-run", "-p", "sendgrid"])
    assert dry.exit_code == 0
    assert "warning: NEWSLETTER_SECRET is not set" in dry.output
    assert "SENDGRID_API_KEY is not set" in dry.output
