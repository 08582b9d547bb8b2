"""`newsletter status ISSUE` after the send: bounces, complaints, rates and warnings."""

from __future__ import annotations

import json
import mailbox
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.delivery.reputation import IssueFeedback, issue_feedback, thresholds
from tests.bouncing import make_ws, returned, run, send
from tests.sending import ISSUE_ID, SECRET


@pytest.mark.parametrize(
    ("complained", "hard", "expected"),
    [
        (0, 9, []),
        (1, 0, ["stay under 0.1%"]),
        (2, 0, ["stay under 0.1%"]),
        (3, 0, ["at 0.3% or more Gmail"]),
        (0, 10, ["permanent failures at 1.00%"]),
        (4, 12, ["at 0.3% or more Gmail", "permanent failures at 1.20%"]),
    ],
)
def test_warnings_at_the_bulk_sender_thresholds(
    complained: int, hard: int, expected: list[str]
) -> None:
    found = thresholds(IssueFeedback(1000, hard=hard, complained=complained))
    assert len(found) == len(expected)
    assert all(part in text for part, text in zip(expected, found, strict=True))


def test_counts_per_issue_from_the_mailbox(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    names = ["postfix_hard.eml", "qmail_hard.eml", "gmail_over_quota.eml", "arf_complaint.eml"]
    box = mailbox.Maildir(tmp_path / "Bounces", create=True)
    for name in [*names, "autoreply_out_of_office.eml"]:
        box.add(returned(cfg, name))
    run(cfg, tmp_path / "Bounces")

    found = issue_feedback(cfg, ISSUE_ID, 18)

    assert found is not None
    assert (found.hard, found.soft, found.complained, found.unsubscribed) == (3, 1, 1, 0)
    assert found.to_json()["rates"]["bounced_hard"] == round(3 / 18, 6)
    assert len(found.warnings) == 2  # 5.6% complaints, 16.7% hard: both far past the lines


def test_status_prints_them_and_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    box = mailbox.Maildir(tmp_path / "Bounces", create=True)
    box.add(returned(cfg, "arf_complaint.eml"))
    run(cfg, tmp_path / "Bounces")
    monkeypatch.chdir(cfg.root)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)

    result = CliRunner().invoke(app, ["status", ISSUE_ID])
    assert result.exit_code == 0, result.output
    assert "After the send, of 18 sent: 0 bounced (hard) (0.00%)" in result.output
    assert "1 complained (5.56%)" in result.output
    assert "warning: spam complaints at 5.56%" in result.output

    as_json = CliRunner().invoke(app, ["status", ISSUE_ID, "--json"])
    assert json.loads(as_json.output)["after_send"]["complained"] == 1


def test_status_says_nothing_of_it_before_any_bounce_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    monkeypatch.chdir(cfg.root)
    result = CliRunner().invoke(app, ["status", ISSUE_ID])
    assert result.exit_code == 0, result.output
    assert "After the send" not in result.output
