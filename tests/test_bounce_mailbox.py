"""`newsletter bounces MAILBOX` over a Maildir and an mbox: who is suppressed, once."""

from __future__ import annotations

import mailbox
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.delivery.send import SendOptions, dry_run
from newsletter.lists.aftermath import BounceReport, read_bounces
from newsletter.lists.mailboxes import open_mailbox
from newsletter.lists.suppressions import CsvSuppressions, list_suppressions
from newsletter.lists.verp import envelope_sender
from newsletter.storage.bounces import open_state
from tests.bouncing import (
    DATA,
    FIXTURE_READERS,
    VERP_PLACEHOLDER,
    maildir,
    make_ws,
    returned,
    run,
    send,
    suppressed,
)
from tests.sending import ISSUE_ID, SECRET
from tests.workspace import SAMPLE

ALL_FIXTURES = sorted(p.name for p in DATA.glob("*.eml"))


def test_a_mailbox_of_every_form_suppresses_exactly_the_failed_addresses(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    spec = maildir(tmp_path / "Bounces", [returned(cfg, n) for n in ALL_FIXTURES])

    report = run(cfg, spec)

    assert suppressed(cfg) == {
        "gone@example.com": "hard bounce",
        "nobody.here@gmail.com": "hard bounce",
        "left.company@example.net": "hard bounce",
        "no.such.user@example.info": "hard bounce",
        "far.away@example.info": "hard bounce",
        "former.staff@contoso.example": "hard bounce",
        "old.mailbox@fabrikam.example": "hard bounce",
        "reader2@example.com": "hard bounce",  # mangled: only the return path names them
        "grumpy@example.com": "spam complaint",
        "reader3@example.com": "spam complaint",  # redacted complaint, named by VERP
    }
    assert report.read == len(ALL_FIXTURES)
    assert report.kinds == {"bounce": 9, "complaint": 2, "autoreply": 3, "delayed": 1}
    # soft ones are counted, not suppressed, after one issue
    assert sorted(report.counted) == [("down.host@example.info", 1), ("full.box@gmail.com", 1)]
    # the issue each one answers is kept with it
    with open_state(cfg.state_dir) as state:
        counts = state.issue_counts(ISSUE_ID)
    assert counts == {"hard": 8, "soft": 2, "complaint": 2}


def test_a_rerun_counts_nothing_twice_and_marks_messages_seen(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    spec = maildir(tmp_path / "Bounces", [returned(cfg, n) for n in ALL_FIXTURES])
    run(cfg, spec)
    before = list_suppressions(cfg)

    again = run(cfg, spec)

    assert (again.read, again.already_processed) == (0, 0)  # all moved to cur/ with S
    assert list_suppressions(cfg) == before
    box = mailbox.Maildir(spec, create=False)
    flags = {f"{m.get_subdir()}:{m.get_flags()}" for m in map(box.get_message, box.keys())}
    assert flags == {"cur:S"}


def test_a_message_marked_unread_again_is_still_counted_once(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws", soft_limit=2)
    send(cfg)
    spec = maildir(tmp_path / "Bounces", [returned(cfg, "gmail_over_quota.eml")])
    run(cfg, spec)
    # a person moves it back to new/ in their mail client
    box = mailbox.Maildir(spec, create=False)
    for key in box.iterkeys():
        message = box.get_message(key)
        message.set_subdir("new")
        message.set_flags("")
        box[key] = message

    again = run(cfg, spec)

    assert (again.read, again.already_processed) == (0, 1)
    assert "full.box@gmail.com" not in suppressed(cfg)  # one soft bounce, not two


def test_an_auto_reply_suppresses_no_one(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    names = ["autoreply_out_of_office.eml", "autoreply_x_autoreply.eml", "postfix_delayed.eml"]
    report = run(cfg, maildir(tmp_path / "Bounces", [returned(cfg, n) for n in names]))
    assert report.kinds == {"autoreply": 2, "delayed": 1}
    assert suppressed(cfg) == {}


def test_soft_bounces_suppress_after_the_limit_in_a_row_across_issues(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws", soft_limit=3)
    issues = ["2025-08-01-a", "2025-08-08-b", "2025-08-15-c", "2025-08-22-d", "2025-08-29-e"]
    for issue in issues:
        send(cfg, issue)

    def soft(issue: str, n: int) -> BounceReport:
        raw = returned(cfg, "gmail_over_quota.eml", issue).replace(
            b"0002.GMR", f"{issue}.GMR".encode()
        )
        # the over-quota report names full.box@gmail.com; sign it for them too
        raw = raw.replace(b"To: bounces@news.example.org", b"To: " + sign(issue))
        return run(cfg, maildir(tmp_path / f"box{n}", [raw]))

    def sign(issue: str) -> bytes:
        return envelope_sender(cfg, "full.box@gmail.com", issue).encode()

    soft(issues[0], 0)
    soft(issues[1], 1)
    # issue c went out and did not bounce: the streak starts again with d
    report = soft(issues[3], 3)
    assert report.counted == [("full.box@gmail.com", 1)]
    report = soft(issues[4], 4)
    assert report.counted == [("full.box@gmail.com", 2)]
    assert "full.box@gmail.com" not in suppressed(cfg)
    # a late report for c closes the gap: a, b, c, d, e all bounced
    report = soft(issues[2], 2)
    assert report.suppressed == [("full.box@gmail.com", "soft", issues[2])]
    assert suppressed(cfg) == {"full.box@gmail.com": "soft bounces (5 issues in a row)"}


def test_the_next_send_skips_whoever_was_suppressed(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    run(cfg, maildir(tmp_path / "Bounces", [returned(cfg, "postfix_hard.eml")]))
    shutil.copy(cfg.root / SAMPLE, cfg.root / "issues" / "2025-08-08-next.yaml")
    plan = dry_run(
        cfg,
        cfg.root / "issues" / "2025-08-08-next.yaml",
        cfg.root / "list.csv",
        SendOptions(provider="outbox"),
    )
    assert plan.skipped["suppressed"] == 1
    assert plan.to_send == len(FIXTURE_READERS) + 5 - 1


def test_an_mbox_is_read_and_never_rewritten(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(path, create=True)
    for name in ("qmail_hard.eml", "exim_plain_hard.eml", "autoreply_subject_only.eml"):
        box.add(returned(cfg, name))
    box.close()
    before = path.read_bytes()

    first = run(cfg, path)
    again = run(cfg, path)

    assert suppressed(cfg).keys() == {
        "no.such.user@example.info",
        "far.away@example.info",
        "left.company@example.net",
    }
    assert (first.read, again.read, again.already_processed) == (3, 0, 3)
    assert path.read_bytes() == before


def test_without_verp_the_issue_comes_from_the_ledger(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws", extra="\nbounces:\n  address: bounces@news.example.org\n")
    send(cfg, "2025-08-01-old")
    send(cfg, "2025-08-08-new")
    raw = (
        (DATA / "postfix_hard.eml")
        .read_bytes()
        .replace(VERP_PLACEHOLDER, b"bounces@news.example.org")
    )
    run(cfg, maildir(tmp_path / "Bounces", [raw]))
    with open_state(cfg.state_dir) as state:
        assert state.issue_counts("2025-08-08-new") == {"hard": 1}


def test_a_forged_return_path_names_no_one(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    forged = (
        (DATA / "mangled_hard.eml")
        .read_bytes()
        .replace(VERP_PLACEHOLDER, f"bounces+{'a' * 16}-{ISSUE_ID}@news.example.org".encode())
    )
    report = run(cfg, maildir(tmp_path / "Bounces", [forged]))
    assert report.nameless == 1
    assert suppressed(cfg) == {}


def test_the_cli_reads_a_maildir_and_says_what_it_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    spec = maildir(tmp_path / "Bounces", [returned(cfg, "postfix_hard.eml")])
    monkeypatch.chdir(cfg.root)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    result = CliRunner().invoke(app, ["bounces", str(spec)])
    assert result.exit_code == 0, result.output
    assert "gone@example.com: hard bounce" in result.output
    assert "1 suppressed" in result.output


def test_the_cli_refuses_a_mailbox_that_is_not_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_ws(tmp_path / "ws")
    monkeypatch.chdir(cfg.root)
    result = CliRunner().invoke(app, ["bounces", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "no such mailbox" in result.output


class _DiskFull(CsvSuppressions):
    def flush(self) -> None:
        raise OSError("No space left on device")


def test_a_crash_before_the_suppressions_are_written_loses_nothing(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    spec = maildir(tmp_path / "Bounces", [returned(cfg, "postfix_hard.eml")])
    box = open_mailbox(str(spec), cfg.env)
    with open_state(cfg.state_dir) as state, pytest.raises(OSError):
        read_bounces(cfg, box, sink=_DiskFull(cfg.suppressions_path), state=state)
    box.close()
    assert suppressed(cfg) == {}

    report = run(cfg, spec)  # the message was neither marked nor remembered

    assert report.read == 1
    assert suppressed(cfg) == {"gone@example.com": "hard bounce"}


def test_a_removed_address_starts_its_soft_bounce_count_again(tmp_path: Path) -> None:
    from newsletter.lists.suppressions import remove_suppression

    cfg = make_ws(tmp_path / "ws", soft_limit=1)
    send(cfg)
    run(cfg, maildir(tmp_path / "a", [returned(cfg, "gmail_over_quota.eml")]))
    assert suppressed(cfg) == {"full.box@gmail.com": "soft bounces (1 issue in a row)"}

    remove_suppression(cfg, "full.box@gmail.com", why="mailbox emptied")

    assert suppressed(cfg) == {}
    with open_state(cfg.state_dir) as state:
        assert [e.kind for e in state.events("full.box@gmail.com")] == []
