"""`send --at` through SendGrid, `newsletter cancel`, and what `status` says of them, against
the SendGrid-like server on 127.0.0.1 (which validates every mail send against SendGrid's
spec, makes batch ids and takes cancellations as SendGrid's scheduled-sends API does)."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.delivery.schedule import cancel_scheduled
from newsletter.errors import ProviderError, SendRefused
from newsletter.storage.ledger import Ledger
from newsletter.web.archive import build_archive
from tests.sending import ISSUE_ID, SECRET, config, readers, sg_send, workspace
from tests.servers.sendgrid import SendGridServer, drop_after_accept, slow, status
from tests.workspace import MINIMAL_ISSUE, SAMPLE, write_issue

BERLIN = ZoneInfo("Europe/Berlin")
SETTINGS = "timezone: Europe/Berlin\nsendgrid:\n  batch_size: 10\n"


@pytest.fixture
def ws(tmp_path: Path, sendgrid_server: SendGridServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace of 25 readers, in the current folder, with the server's key and host."""
    root = workspace(tmp_path / "ws", 25, SETTINGS)
    monkeypatch.chdir(root)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", sendgrid_server.api_key)
    monkeypatch.setenv("SENDGRID_API_HOST", sendgrid_server.url)
    return root


def later(**delta: float) -> datetime:
    """A time ahead, to the minute, in Berlin."""
    return (datetime.now(BERLIN) + timedelta(**delta)).replace(second=0, microsecond=0)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def send_at(at: datetime, *more: str) -> tuple[int, str]:
    """`send --at "YYYY-MM-DD HH:MM"` (read in timezone: Europe/Berlin) through SendGrid."""
    when = f"{at:%Y-%m-%d %H:%M}"
    return run("send", SAMPLE, "--to", "list.csv", "-p", "sendgrid", "--yes", "--at", when, *more)


def ledger(ws: Path) -> Ledger:
    return Ledger(ws / ".newsletter" / "ledger.sqlite")


def test_send_at_hands_every_batch_over_now_with_the_time_and_one_batch_id(
    ws: Path, sendgrid_server: SendGridServer
) -> None:
    at = later(days=2)
    code, out = send_at(at)
    assert code == 0, out
    (batch,) = sendgrid_server.scheduled_sends  # one batch id for the whole send
    bodies = [a.body for a in sendgrid_server.accepted]
    assert len(bodies) == 3  # 25 readers, batches of 10, every one handed over now
    assert {(b["send_at"], b["batch_id"]) for b in bodies} == {(int(at.timestamp()), batch)}
    assert "Handed over 25 in 3 batches" in out
    assert re.search(f"Goes out {at:%Y-%m-%d %H:%M} CET \\(\\+01:00\\), in 4[78] h", out), out
    assert f"`newsletter cancel {ISSUE_ID}` calls it back until" in out
    assert f"(batch {batch})" in out
    with ledger(ws) as led:
        (held,) = led.schedules(ISSUE_ID)
        assert led.counts(ISSUE_ID) == {"sent": 25}
    assert (held.provider, held.provider_batch, held.status) == ("sendgrid", batch, "scheduled")
    assert datetime.fromisoformat(held.send_at) == at
    assert held.recipients == 25


def test_cancel_then_a_later_send_mails_exactly_the_cancelled_readers_once(
    ws: Path, sendgrid_server: SendGridServer
) -> None:
    (ws / "list.csv").write_text(readers(5))
    code, out = run("send", SAMPLE, "--to", "list.csv", "-p", "sendgrid", "--yes")
    assert code == 0, out  # five readers have the issue already, sent at once
    (ws / "list.csv").write_text(readers(20))
    code, out = send_at(later(hours=5))
    assert code == 0, out
    assert "Handed over 15" in out  # only those who do not have it
    (batch,) = sendgrid_server.scheduled_sends

    code, out = run("cancel", ISSUE_ID)
    assert code == 0, out
    assert f"(batch {batch}): 15 recipients marked not sent" in out
    assert sendgrid_server.scheduled_sends == {batch: "cancel"}
    first = {f"reader{i:05d}@example.com": 1 for i in range(5)}
    assert sendgrid_server.delivered_to() == first  # SendGrid discards the cancelled batch
    with ledger(ws) as led:
        assert led.counts(ISSUE_ID) == {"sent": 5, "failed": 15}
        failed = list(led.deliveries(ISSUE_ID, "failed"))
    assert {d.email for d in failed} == {f"reader{i:05d}@example.com" for i in range(5, 20)}
    assert {d.error for d in failed} == {"cancelled before its scheduled time (newsletter cancel)"}

    requests = sendgrid_server.requests
    code, out = run("cancel", ISSUE_ID)  # again: nothing to do, and SendGrid is not asked
    assert code == 0, out
    assert "Already cancelled: the send of" in out and batch in out
    assert sendgrid_server.requests == requests

    code, out = run("send", SAMPLE, "--to", "list.csv", "-p", "sendgrid", "--yes")
    assert code == 0, out
    assert "15 in" in out and "5 already sent" in out
    assert sendgrid_server.delivered_to() == {f"reader{i:05d}@example.com": 1 for i in range(20)}
    assert "send_at" not in sendgrid_server.accepted[-1].body  # this one goes now
    with ledger(ws) as led:
        assert led.counts(ISSUE_ID) == {"sent": 20}


def test_cancel_after_the_time_or_too_near_it_is_refused_and_changes_nothing(
    ws: Path, sendgrid_server: SendGridServer
) -> None:
    at = later(hours=3)
    assert send_at(at)[0] == 0
    cfg = config(ws, {"SENDGRID_API_KEY": sendgrid_server.api_key})
    requests = sendgrid_server.requests

    with pytest.raises(SendRefused) as past:
        cancel_scheduled(cfg, ISSUE_ID, now=lambda: at.timestamp() + 120)
    assert "went out 2 min ago" in str(past.value)
    assert "cannot be called back" in str(past.value)

    with pytest.raises(SendRefused) as near:
        cancel_scheduled(cfg, ISSUE_ID, now=lambda: at.timestamp() - 300)
    assert "is only 5 min away" in str(near.value)
    assert "promises no cancellation later than 10 min before the time" in str(near.value)

    assert sendgrid_server.requests == requests  # SendGrid was not asked
    with ledger(ws) as led:
        assert led.counts(ISSUE_ID) == {"sent": 25}
        assert [s.status for s in led.schedules(ISSUE_ID)] == ["scheduled"]


def test_a_provider_error_on_cancel_says_what_to_do_and_changes_nothing(
    ws: Path, sendgrid_server: SendGridServer
) -> None:
    assert send_at(later(hours=3))[0] == 0
    sendgrid_server.inject(status(503))
    code, out = run("cancel", ISSUE_ID)
    assert code == 3, out
    assert "sendgrid did not cancel the send of" in out
    assert "SendGrid answered 503" in out
    assert "Nothing was changed: its 25 recipients still get the issue then." in out
    assert f"run `newsletter cancel {ISSUE_ID}` again before" in out
    assert sendgrid_server.api_key not in out
    with ledger(ws) as led:
        assert led.counts(ISSUE_ID) == {"sent": 25}
    code, out = run("cancel", ISSUE_ID)  # SendGrid is back
    assert code == 0, out
    with ledger(ws) as led:
        assert led.counts(ISSUE_ID) == {"failed": 25}


@pytest.mark.parametrize("state", ["cancel", "pause"])
def test_a_batch_sendgrid_already_holds_as_cancelled_or_paused_is_cancelled_in_the_ledger(
    ws: Path, sendgrid_server: SendGridServer, state: str
) -> None:
    """As after a cancel whose ledger write failed: SendGrid answers 400 to a second status,
    so the batch's status is asked for, and a pause becomes a cancellation."""
    assert send_at(later(hours=3))[0] == 0
    (batch,) = sendgrid_server.scheduled_sends
    sendgrid_server.scheduled_sends[batch] = state
    code, out = run("cancel", ISSUE_ID)
    assert code == 0, out
    assert "25 recipients marked not sent" in out
    assert sendgrid_server.scheduled_sends == {batch: "cancel"}
    assert sendgrid_server.delivered_to() == {}


def test_a_send_stopped_half_way_can_still_be_cancelled(
    ws: Path, sendgrid_server: SendGridServer
) -> None:
    """The batch id is in the ledger before the first request: what went is called back."""
    with (ws / "newsletter.yaml").open("a") as fh:
        fh.write("  concurrent_requests: 1\n")  # in sendgrid:, one request out at a time
    # the batch id and the first mail send go through; the second is refused (a 401)
    sendgrid_server.inject(slow(0), slow(0), status(401))
    code, out = send_at(later(hours=3))
    assert code == 3, out
    with ledger(ws) as led:
        (held,) = led.schedules(ISSUE_ID)
        assert led.counts(ISSUE_ID) == {"sent": 10, "failed": 10}
    assert held.recipients == 10
    code, out = run("cancel", ISSUE_ID)
    assert code == 0, out
    assert "10 recipients marked not sent" in out
    with ledger(ws) as led:
        assert led.counts(ISSUE_ID) == {"failed": 20}
    assert sendgrid_server.delivered_to() == {}


def test_a_batch_id_refused_for_now_or_unanswered_is_asked_for_again(
    ws: Path, sendgrid_server: SendGridServer
) -> None:
    """An unused batch id holds nothing: a 503 and a lost answer cost two more tries."""
    sendgrid_server.inject(status(503), drop_after_accept())
    at = later(hours=5)
    report = sg_send(ws, sendgrid_server, at=at, backoff=0.0, max_backoff=0.0)
    assert report.sent == 25
    batches = {a.body["batch_id"] for a in sendgrid_server.accepted}
    assert len(batches) == 1 and set(sendgrid_server.scheduled_sends) >= batches
    with ledger(ws) as led:
        (held,) = led.schedules(ISSUE_ID)
    assert {held.provider_batch} == batches


def test_a_batch_id_refused_every_time_stops_the_send_before_anything_goes(
    ws: Path, sendgrid_server: SendGridServer
) -> None:
    sendgrid_server.inject(*[status(503)] * 3)
    with pytest.raises(ProviderError, match=r"no batch id for the scheduled send after 3 tries"):
        sg_send(
            ws, sendgrid_server, at=later(hours=5), backoff=0.0, max_backoff=0.0, max_attempts=3
        )
    assert sendgrid_server.accepted == []
    with ledger(ws) as led:
        assert led.schedules(ISSUE_ID) == [] and led.counts(ISSUE_ID) == {}


def test_cancel_without_a_scheduled_send_says_so(ws: Path) -> None:
    code, out = run("cancel", ISSUE_ID)
    assert code == 1 and "nothing has been sent from this workspace" in out
    assert run("send", SAMPLE, "--to", "list.csv", "-p", "sendgrid", "--yes")[0] == 0
    code, out = run("cancel", SAMPLE)  # the file or its id
    assert code == 1
    assert f"no send of {ISSUE_ID} waits in the foreground" in out
    assert "no scheduled send of it is recorded" in out
    assert "a `send --at` through smtp or the outbox can be cancelled only while it waits" in out
    with ledger(ws) as led:
        assert led.counts(ISSUE_ID) == {"sent": 25}


def test_times_past_or_beyond_72_hours_are_refused_before_anything_is_sent(
    ws: Path, sendgrid_server: SendGridServer
) -> None:
    code, out = send_at(later(hours=-2))
    assert code == 2
    assert "is in the past" in out and "leave out --at to send now" in out
    code, out = send_at(later(hours=73))
    assert code == 2
    assert "sendgrid holds mail for at most 72 hours (less 10 min for the send itself" in out
    assert "run the command later, from a systemd timer or cron" in out
    code, out = send_at(later(hours=73), "--dry-run")
    assert code == 2 and "holds mail for at most" in out
    code, out = run("send", SAMPLE, "--to", "list.csv", "-p", "sendgrid", "--at", "tomorrow")
    assert code == 2 and "give a date and a time" in out
    code, out = send_at(later(hours=1), "--test-to", "editor@example.org")
    assert code == 2 and "--test-to sends one copy now: leave out --at" in out
    assert sendgrid_server.requests == 0
    assert not (ws / ".newsletter" / "ledger.sqlite").exists()


def test_the_dry_run_says_when_it_goes_out(ws: Path, sendgrid_server: SendGridServer) -> None:
    at = later(hours=30)
    code, out = send_at(at, "--dry-run")
    assert code == 0, out
    assert f"Goes out {at:%Y-%m-%d %H:%M} CET (+01:00), in" in out
    assert "handed to sendgrid now, which holds it until then" in out
    args = ["send", SAMPLE, "--to", "list.csv", "-p", "sendgrid", "--dry-run", "--json"]
    result = CliRunner().invoke(app, [*args, "--at", at.isoformat()])
    assert json.loads(result.stdout)["send_at"] == at.isoformat()
    code, out = send_at(later(minutes=5), "--dry-run")
    assert code == 0, out
    assert "too near to call back (sendgrid promises no cancellation later than 10 min" in out
    assert sendgrid_server.requests == 0


def test_status_shows_scheduled_sends_cancelled_or_not(
    ws: Path, sendgrid_server: SendGridServer
) -> None:
    at = later(hours=20)
    assert send_at(at)[0] == 0
    (batch,) = sendgrid_server.scheduled_sends
    code, out = run("status", ISSUE_ID)
    assert code == 0, out
    send_id = json.loads(CliRunner().invoke(app, ["status", ISSUE_ID, "--json"]).stdout)["sends"][
        0
    ]["id"]
    what = f"Scheduled: send {send_id} via sendgrid (batch {batch})"
    assert f"{what}: 25 recipients at {at:%Y-%m-%d %H:%M} CET (+01:00), scheduled" in out
    code, out = run("status")  # of every issue: what is still to go out
    assert code == 0, out
    assert (
        f"Scheduled: {ISSUE_ID}: send {send_id} via sendgrid (batch {batch}): 25 recipients "
        f"at {at:%Y-%m-%d %H:%M} CET (+01:00)"
    ) in out

    assert run("cancel", ISSUE_ID)[0] == 0
    assert run("status") == (0, "Nothing waits or is scheduled to go out.")
    result = CliRunner().invoke(app, ["status", ISSUE_ID, "--json"])
    (held,) = json.loads(result.stdout)["scheduled"]
    assert (held["provider_batch"], held["status"], held["recipients"]) == (
        batch,
        "cancelled",
        25,
    )
    assert datetime.fromisoformat(held["send_at"]) == at
    assert time.time() - datetime.fromisoformat(held["cancelled_at"]).timestamp() < 3600
    code, out = run("status", ISSUE_ID)
    assert "Recipients: 25 failed" in out
    assert f"{what}, for {at:%Y-%m-%d %H:%M} CET (+01:00): cancelled at" in out
    assert "UTC, 25 recipients marked not sent" in out


def test_the_archive_publishes_a_held_issue_only_once_its_time_has_come(
    ws: Path, sendgrid_server: SendGridServer
) -> None:
    """An issue dated ahead, scheduled through SendGrid: its readers are `sent` (handed
    over), but none has it before the time, so the web archive leaves it out until then."""
    day = (datetime.now(BERLIN) + timedelta(days=5)).date()
    issue = write_issue(ws, f"{day}-soon.yaml", MINIMAL_ISSUE.replace("2025-08-08", str(day)))
    at = later(hours=3)
    args = ["send", str(issue), "--to", "list.csv", "-p", "sendgrid", "--yes"]
    code, out = run(*args, "--at", at.isoformat())
    assert code == 0, out
    cfg = config(ws, {})
    assert f"{day}-soon" not in build_archive(cfg).published
    assert f"{day}-soon" in build_archive(cfg, now=at + timedelta(minutes=1)).published
