"""Sends at a set time (`send --at`), and `cancel` for those a provider holds until then.

A provider that can hold mail (SendGrid, up to 72 hours ahead) is handed the whole send
now: every request carries the time and one batch id, recorded in the ledger before the
first request leaves, so `newsletter cancel` can call the send back until shortly before
its time and mark exactly its recipients as not sent. SMTP and the outbox cannot hold
mail, so the command waits in the foreground until the time; a Ctrl-C or SIGTERM while
it waits sends nothing. The store keeps a record of the wait, so `newsletter status` shows
it and `newsletter cancel` stops it with that SIGTERM.

A time without an offset is read in `timezone:` from newsletter.yaml (an IANA name), or
else in this machine's zone; a time that a clock change skips or repeats is refused
rather than guessed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from newsletter.config import Config, secrets
from newsletter.delivery.providers import PROVIDERS
from newsletter.delivery.ratelimit import describe
from newsletter.delivery.report import Report
from newsletter.delivery.stop import StopRequest, stop_waiting
from newsletter.errors import (
    LedgerError,
    NoSendError,
    ProviderError,
    SendInterrupted,
    SendRefused,
    UsageError,
)
from newsletter.storage.schedules import SCHEDULED, Schedule
from newsletter.storage.store import LedgerStore, existing_ledger, open_store, waiting_sends
from newsletter.storage.waiting import WaitingSend
from newsletter.words import plural

#: Room left for the requests of a long send below the provider's window: a time right at
#: its edge would be past it for the last batches.
SEND_ROOM = 10 * 60.0
CANCELLED_REASON = "cancelled before its scheduled time (newsletter cancel)"


def zone(config: Config) -> tzinfo | None:
    """The time zone of `timezone:`, or None for this machine's own."""
    import zoneinfo

    name = config.settings.timezone
    return zoneinfo.ZoneInfo(name) if name else None


def zone_name(config: Config) -> str:
    return config.settings.timezone or "this machine's time zone"


def parse_at(text: str, config: Config) -> datetime:
    """`--at` as a moment: "2026-12-04 08:00" in the configured zone, or ISO 8601 with an
    offset ("2026-12-04T08:00+01:00", "…Z")."""
    example = '"2026-12-04 08:00" or "2026-12-04T08:00+01:00"'
    try:
        given = datetime.fromisoformat(text.strip())
    except ValueError:
        given = None
    if given is None or ":" not in text:
        raise UsageError(f"--at {text!r}: give a date and a time, e.g. {example}")
    if given.tzinfo is not None:
        return given
    tz = zone(config)
    if tz is None:  # the machine's zone: astimezone() reads a naive time as local
        first, second = given.astimezone(), given.replace(fold=1).astimezone()
        back = first.astimezone().replace(tzinfo=None)
    else:
        first, second = given.replace(tzinfo=tz), given.replace(tzinfo=tz, fold=1)
        back = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    where = zone_name(config)
    if back != given:
        raise UsageError(
            f"--at {text!r}: there is no such time in {where} (the clocks go forward then); "
            f"give another, or an offset, e.g. {example}"
        )
    if first.utcoffset() != second.utcoffset():
        raise UsageError(
            f"--at {text!r}: that time comes twice in {where} (the clocks go back then); "
            f"give its offset, e.g. {given:%Y-%m-%dT%H:%M}{_offset(first)} or "
            f"{given:%Y-%m-%dT%H:%M}{_offset(second)}"
        )
    return first


def _offset(moment: datetime) -> str:
    text = moment.strftime("%z")
    return f"{text[:3]}:{text[3:]}" if text else ""


def show(moment: datetime) -> str:
    """A moment as the editor reads it: `2026-12-04 08:00 CET (+01:00)` (with the seconds,
    if it has any)."""
    name = moment.tzname() or ""
    offset = _offset(moment)
    clock = f"{moment:%Y-%m-%d %H:%M}" + (f":{moment:%S}" if moment.second else "")
    if not name or name[0] in "+-" or name == offset:
        return f"{clock} (UTC{offset})"
    return f"{clock} {name} ({offset})"


def show_at(timestamp: float, like: datetime) -> str:
    """A unix time shown in the zone of `like`."""
    return show(datetime.fromtimestamp(timestamp, tz=like.tzinfo))


def check_at(at: datetime, provider: str, now: float) -> None:
    """Refuse a time already past, and one beyond what the provider holds mail for."""
    ahead = at.timestamp() - now
    if ahead <= 0:
        raise UsageError(
            f"--at {show(at)} is in the past ({describe(-ahead)} ago); give a later time, or "
            "leave out --at to send now"
        )
    scheduling = PROVIDERS[provider].schedule
    if scheduling is not None and ahead > scheduling.window - SEND_ROOM:
        latest = show_at(now + scheduling.window - SEND_ROOM, at)
        raise UsageError(
            f"--at {show(at)} is {describe(ahead)} ahead, but {provider} holds mail for at "
            f"most {scheduling.window / 3600:.0f} hours (less {describe(SEND_ROOM)} for the "
            f"send itself: {latest} at the latest now); run the command later, from a "
            "systemd timer or cron (see the README), or send through smtp or the outbox, "
            "which wait in the foreground"
        )


def plan_note(at: datetime, provider: str, issue: str, now: float) -> str:
    """What the dry run and the report say of when the send goes out."""
    ahead = f"{show(at)}, in {describe(max(at.timestamp() - now, 0))}"
    scheduling = PROVIDERS[provider].schedule
    if scheduling is None:
        return f"{ahead}: this command waits until then in the foreground (keep it running)"
    last = at.timestamp() - scheduling.cancel_margin
    held = f"{ahead}: handed to {provider} now, which holds it until then"
    if last <= now:
        return (
            f"{held}; too near to call back ({provider} promises no cancellation later than "
            f"{describe(scheduling.cancel_margin)} before the time)"
        )
    return f"{held}; `newsletter cancel {issue}` calls it back until {show_at(last, at)}"


def wait_until(
    at: datetime,
    *,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    stopped: Callable[[], bool] = lambda: False,
    on_wait: Callable[[float], None] | None = None,
) -> bool:
    """Wait for `at` by the wall clock, a second at a time (a suspended laptop or a clock
    set right is noticed); False if `stopped` said so first."""
    while (left := at.timestamp() - now()) > 0:
        if stopped():
            return False
        if on_wait is not None:
            on_wait(left)
        sleep(min(left, 1.0))
    return not stopped()


def wait_in_foreground(
    at: datetime,
    report: Report,
    *,
    record: AbstractContextManager[object],
    stop: StopRequest | None,
    now: Callable[[], float],
    sleep: Callable[[float], None],
    on_wait: Callable[[float], None] | None,
) -> None:
    """The send's wait for its time (a provider that cannot hold mail), inside `record` (the
    store's record of it, which `cancel` signals through): `on_wait` hears the seconds left,
    then 0; a stop first raises SendInterrupted, nothing having been sent.

    The stop is checked again once the record is gone, so a `cancel` that signalled as the
    time came still stops the send before it opens the ledger.
    """
    stopped: Callable[[], bool] = (lambda: stop.requested) if stop is not None else (lambda: False)
    with record:
        waited = wait_until(at, now=now, sleep=sleep, stopped=stopped, on_wait=on_wait)
    if not waited or stopped():
        assert stop is not None
        raise SendInterrupted(
            f"stopped by {stop.what} while waiting for {show(at)}: nothing was sent; the "
            "command below waits again",
            report,
            stop.exit_code,
        )
    if on_wait is not None:
        on_wait(0.0)
    report.send_at_note = f"{show(at)}: waited for it in the foreground"


@dataclass
class CancelReport:
    """What `newsletter cancel` did: per scheduled send, cancelled now, before, or not."""

    issue: str
    #: (batch id, time, recipients marked not sent) for each cancelled now.
    cancelled: list[tuple[str, str, int]] = field(default_factory=list)
    #: (batch id, time, when cancelled) for each cancelled by an earlier run.
    already: list[tuple[str, str, str]] = field(default_factory=list)
    #: Why a held send could not be cancelled (its time is past or too near), or a waiting
    #: one stopped (another host's or user's process, or one that did not stop).
    refused: list[str] = field(default_factory=list)
    #: Sends that were waiting in the foreground and were stopped, nothing sent.
    stopped: list[WaitingSend] = field(default_factory=list)
    #: The zone to show times in (`timezone:`); None: this machine's.
    timezone: tzinfo | None = None

    @property
    def marked(self) -> int:
        return sum(n for _b, _t, n in self.cancelled)

    @property
    def done(self) -> bool:
        """Whether anything was called back or stopped."""
        return bool(self.cancelled or self.stopped)

    def to_json(self) -> dict[str, Any]:
        return {
            "issue": self.issue,
            "cancelled": [
                {"batch_id": b, "send_at": t, "recipients": n} for b, t, n in self.cancelled
            ],
            "already_cancelled": [
                {"batch_id": b, "send_at": t, "cancelled_at": c} for b, t, c in self.already
            ],
            "stopped_waiting": [
                {"send_at": w.send_at, "provider": w.provider, "pid": w.pid, "host": w.host}
                for w in self.stopped
            ],
            "refused": self.refused,
            "marked_not_sent": self.marked,
        }


def _moment(stored: str, config: Config) -> datetime:
    """A stored UTC time in the editor's zone."""
    return datetime.fromisoformat(stored).astimezone(zone(config))


def cancel_scheduled(
    config: Config, issue: str, *, now: Callable[[], float] = time.time
) -> CancelReport:
    """Stop every send of `issue` waiting in the foreground (SMTP, the outbox), and cancel,
    through its provider, every one held for a later time (SendGrid), marking exactly its
    recipients not sent (`failed`), so the next send mails them.

    A waiting send has recorded nothing yet: it is sent SIGTERM, which it takes as a stop
    (nothing sent, the ledger untouched). A held one: the provider first; if it fails, the
    ledger is left as it was and the readers still get the issue at its time. A send whose
    time is past, or too near for the provider to promise a cancellation, is refused
    (SendRefused, when nothing else was done) and its readers stay `sent`. Running it again
    after a success changes nothing.
    """
    report = CancelReport(issue, timezone=zone(config))
    waiting = waiting_sends(config, issue)
    for send in waiting:
        at = show(datetime.fromisoformat(send.send_at).astimezone(zone(config)))
        refusal = stop_waiting(config, send, f"the send of {at} via {send.provider}")
        if refusal is None:
            report.stopped.append(send)
        else:
            report.refused.append(refusal)
    ledger = existing_ledger(config)
    held = []
    if ledger is not None:
        with ledger:
            held = ledger.schedules(issue)
    if not held and not waiting:
        if ledger is None:
            raise NoSendError(
                f"no send of {issue} waits in the foreground, and there is no ledger at "
                f"{config.ledger_path}: nothing has been sent from this workspace"
            )
        raise NoSendError(
            f"no send of {issue} waits in the foreground, and no scheduled send of it is "
            f"recorded in {config.ledger_path}: only a send through a provider that holds mail "
            "(sendgrid) is recorded, and a `send --at` through smtp or the outbox can be "
            "cancelled only while it waits"
        )
    if held:
        with open_store(config) as store, store.send_lock(issue):
            ledger = store.ledger()
            for schedule in ledger.schedules(issue):  # again, under the lock
                _cancel_one(config, ledger, schedule, report, now())
    if report.refused and not report.done:
        raise SendRefused("\n".join([f"cannot cancel {issue}:", *report.refused]))
    return report


def _cancel_one(
    config: Config, ledger: LedgerStore, schedule: Schedule, report: CancelReport, now: float
) -> None:
    at = _moment(schedule.send_at, config)
    if schedule.status != SCHEDULED:
        report.already.append(
            (schedule.provider_batch, at.isoformat(), schedule.cancelled_at or "")
        )
        return
    spec = PROVIDERS[schedule.provider]
    scheduling = spec.schedule
    if scheduling is None:
        raise NoSendError(f"{schedule.provider} cannot cancel a scheduled send")
    readers = plural(schedule.recipients, "recipient")
    left = at.timestamp() - now
    if left <= 0:
        report.refused.append(
            f"the send of {show(at)} ({readers}, batch {schedule.provider_batch}) went out "
            f"{describe(-left)} ago: {schedule.provider} has delivered it, and it cannot be "
            "called back"
        )
        return
    if left < scheduling.cancel_margin:
        report.refused.append(
            f"the send of {show(at)} ({readers}, batch {schedule.provider_batch}) is only "
            f"{describe(left)} away: {schedule.provider} promises no cancellation later than "
            f"{describe(scheduling.cancel_margin)} before the time, so its readers may get it "
            "all the same; they stay recorded as sent"
        )
        return
    last = show_at(at.timestamp() - scheduling.cancel_margin, at)
    again = f"run `newsletter cancel {schedule.issue}` again"
    try:
        scheduling.cancel(spec.ready(config), schedule.provider_batch, secrets(config))
    except ProviderError as exc:
        raise ProviderError(
            f"{schedule.provider} did not cancel the send of {show(at)} (batch "
            f"{schedule.provider_batch}): {exc}. Nothing was changed: its {readers} still get "
            f"the issue then. Fix that and {again} before {last}",
            status=exc.status,
        ) from None
    try:
        marked = ledger.cancel_schedule(schedule.id, CANCELLED_REASON)
    except LedgerError as exc:
        raise LedgerError(
            f"{schedule.provider} cancelled the send of {show(at)} (batch "
            f"{schedule.provider_batch}), but the ledger could not record it ({exc}); its "
            f"{readers} stay recorded as sent, so no send mails them: {again}, which finds "
            "the batch cancelled and records it"
        ) from None
    report.cancelled.append((schedule.provider_batch, at.isoformat(), marked))
