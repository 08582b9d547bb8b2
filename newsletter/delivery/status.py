"""What the ledger says about an issue: its sends, and who is in which state.

After a crash, a stop or a send that ended with unknown outcomes, the editor needs to
know who got the issue and who did not without opening SQLite; this reads the ledger
(while a send runs, too: it only reads) and never creates one.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from newsletter.config import Config
from newsletter.delivery.reputation import IssueFeedback, issue_feedback
from newsletter.delivery.schedule import zone
from newsletter.errors import NoSendError, UsageError
from newsletter.storage.ledger import STATUSES, Delivery, SendRecord
from newsletter.storage.schedules import SCHEDULED, Schedule
from newsletter.storage.store import LedgerStore, existing_ledger, waiting_sends
from newsletter.storage.waiting import WaitingSend

#: The order a person reads the states in: delivered first, then what needs a decision.
ORDER = ("sent", "unknown", "pending", "failed", "rejected")


@dataclass(frozen=True)
class IssueStatus:
    issue: str
    ledger: Path
    sends: list[SendRecord]
    recipients: Counter[str]  # by status: real deliveries
    #: The outbox's rehearsals, by status: mail no reader got, kept apart.
    rehearsal: Counter[str] = dataclasses.field(default_factory=Counter)
    #: Bounces, complaints and unsubscribes its mail led to (the store's suppressions).
    after_send: IssueFeedback | None = None
    #: Sends held by the provider for a set time (`send --at`), cancelled or not.
    schedules: list[Schedule] = dataclasses.field(default_factory=list)
    #: Sends of it waiting in the foreground for their time (`send --at` via smtp, outbox).
    waiting: list[WaitingSend] = dataclasses.field(default_factory=list)
    #: The zone to show times in (`timezone:`); None: this machine's.
    timezone: tzinfo | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "issue": self.issue,
            "ledger": str(self.ledger),
            "recipients": {s: self.recipients[s] for s in ORDER},
            "rehearsal": {s: self.rehearsal[s] for s in ORDER},
            "sends": [dataclasses.asdict(s) for s in self.sends],
            "after_send": self.after_send.to_json() if self.after_send else None,
            "scheduled": [dataclasses.asdict(s) for s in self.schedules],
            "waiting": [w.to_json() for w in self.waiting],
        }


@dataclass(frozen=True)
class Upcoming:
    """What is still to go out, of every issue: sends waiting in the foreground for their
    time, and sends a provider holds until theirs (not cancelled, not yet past)."""

    waiting: list[WaitingSend]
    scheduled: list[Schedule]
    #: The zone to show times in (`timezone:`); None: this machine's.
    timezone: tzinfo | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "waiting": [w.to_json() for w in self.waiting],
            "scheduled": [dataclasses.asdict(s) for s in self.scheduled],
        }


def upcoming(config: Config, *, now: Callable[[], float] = time.time) -> Upcoming:
    """`newsletter status` without an issue: every send still to go out, soonest first.
    It only reads, and an empty workspace has nothing to go out (not an error)."""
    held: list[Schedule] = []
    ledger = existing_ledger(config)
    if ledger is not None:
        with ledger:
            for issue in sorted({s.issue for s in ledger.sends()}):
                held += [
                    s
                    for s in ledger.schedules(issue)
                    if s.status == SCHEDULED
                    and datetime.fromisoformat(s.send_at).timestamp() > now()
                ]
    held.sort(key=lambda s: s.send_at)
    return Upcoming(waiting_sends(config), held, zone(config))


def issue_id(given: str) -> str:
    """An issue's id from its file (`issues/2025-08-01-x.yaml`) or the id itself."""
    return Path(given).stem if given.endswith((".yaml", ".yml")) else given


def _open(config: Config) -> LedgerStore:
    ledger = existing_ledger(config)
    if ledger is None:
        raise NoSendError(
            f"no ledger at {config.ledger_path}: nothing has been sent from this workspace"
        )
    return ledger


def _sends(ledger: LedgerStore, issue: str) -> list[SendRecord]:
    sends = ledger.sends(issue)
    if not sends:
        known = sorted({s.issue for s in ledger.sends()})
        hint = f"; it has sends of {', '.join(known[-5:])}" if known else ""
        raise NoSendError(f"no send of {issue} is recorded in {ledger.path}{hint}")
    return sends


def _recorded(config: Config, issue: str) -> bool:
    ledger = existing_ledger(config)
    if ledger is None:
        return False
    with ledger:
        return bool(ledger.sends(issue))


def issue_status(config: Config, issue: str) -> IssueStatus:
    """Every send of the issue with its manifest and counts, its recipients by state, and
    the sends of it waiting in the foreground (which the ledger has not seen yet)."""
    waiting = waiting_sends(config, issue)
    if waiting and not _recorded(config, issue):
        return IssueStatus(
            issue, config.ledger_path, [], Counter(), waiting=waiting, timezone=zone(config)
        )
    with _open(config) as ledger:
        counts = ledger.counts(issue)
        found = IssueStatus(
            issue,
            config.ledger_path,
            _sends(ledger, issue),
            counts,
            ledger.counts(issue, rehearsal=True),
            schedules=ledger.schedules(issue),
            waiting=waiting,
            timezone=zone(config),
        )
    return dataclasses.replace(found, after_send=issue_feedback(config, issue, counts["sent"]))


def backup_ledger(config: Config, dest: Path) -> None:
    """A whole copy of the workspace's ledger at `dest` (never over a file), safe mid-send."""
    with _open(config) as ledger:
        ledger.backup(dest)


def recipients(config: Config, issue: str, status: str) -> Iterator[Delivery]:
    """The issue's recipients in one state, streamed in address order.

    A wrong state or a missing ledger raises here, before the first row is asked for.
    """
    if status not in STATUSES:
        raise UsageError(f"--show {status!r}: use one of {', '.join(ORDER)}")
    ledger = _open(config)
    try:
        _sends(ledger, issue)
    except BaseException:
        ledger.close()
        raise

    def rows() -> Iterator[Delivery]:
        with ledger:
            yield from ledger.deliveries(issue, status)
            yield from ledger.deliveries(issue, status, rehearsal=True)

    return rows()
