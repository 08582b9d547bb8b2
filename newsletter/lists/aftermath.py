"""After the send: what a bounce, a complaint or a provider's report does to an address.

The rules, in one place, for the bounce mailbox and the SendGrid sync alike:

    hard bounce, invalid address     suppressed at once
    spam complaint, unsubscribe      suppressed at once
    soft bounce, provider block      counted once per issue; suppressed when the last
                                     `bounces.soft_limit` issues (default 3) sent to the
                                     address all soft-bounced. An issue sent in between
                                     that did not bounce starts the count again: the
                                     mailbox was fine then, so it is a passing problem.
    delay warning, auto-reply        nothing

An event is recorded once (its `dedupe` key), so reading the same report again, from the
mailbox or the provider, changes nothing. The issue a report answers comes from the VERP
return path when there is one, else from the ledger: the last issue sent to the address.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from newsletter.config import Config
from newsletter.lists.addresses import address_key
from newsletter.lists.bounces import Notice, read_notice
from newsletter.lists.mailboxes import Mailbox, Returned
from newsletter.lists.suppressions import SuppressionSink
from newsletter.lists.verp import VerpResolver
from newsletter.storage.bounces import BounceState, Event
from newsletter.storage.ledger import SENT, UNKNOWN
from newsletter.storage.store import existing_ledger

EventKind = Literal["hard", "soft", "complaint", "unsubscribe", "block", "invalid"]
#: What suppressions.csv says for each kind.
REASONS: dict[str, str] = {
    "hard": "hard bounce",
    "soft": "soft bounces",
    "complaint": "spam complaint",
    "unsubscribe": "unsubscribed at the provider",
    "block": "blocked",
    "invalid": "invalid address",
}
_AT_ONCE = frozenset({"hard", "complaint", "unsubscribe", "invalid"})
Action = Literal["suppressed", "already", "counted", "seen"]
#: Messages or rows applied, and their suppressions written, in one transaction.
CHUNK = 200


class LedgerHistory:
    """Which issues the ledger sent each address, in order; read once, when first needed.

    Real deliveries only: the outbox's rehearsals reached no reader, so no bounce answers one.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._sent: dict[str, list[tuple[str, str]]] | None = None

    def issues(self, email: str) -> list[str]:
        return [issue for issue, _ in self._history().get(address_key(email), [])]

    def last_issue(self, email: str) -> str | None:
        """The last issue sent to `email`: what a report that names none answers."""
        sent = self._history().get(address_key(email))
        return sent[-1][0] if sent else None

    def _history(self) -> dict[str, list[tuple[str, str]]]:
        if self._sent is None:
            sent: dict[str, list[tuple[str, str]]] = defaultdict(list)
            ledger = existing_ledger(self.config)
            if ledger is not None:
                with ledger:
                    for issue in dict.fromkeys(s.issue for s in ledger.sends()):
                        for d in ledger.deliveries(issue, rehearsal=False):
                            if d.status in (SENT, UNKNOWN):
                                sent[address_key(d.email)].append((issue, d.updated_at))
            for rows in sent.values():
                rows.sort(key=lambda row: row[1])
            self._sent = dict(sent)
        return self._sent


class Aftermath:
    """Applies events to the suppressions (through the sink) and to the bounce state."""

    def __init__(self, config: Config, sink: SuppressionSink, state: BounceState) -> None:
        self.config = config
        self.sink = sink
        self.state = state
        self.history = LedgerHistory(config)
        self.soft_limit = config.settings.bounces.soft_limit

    def apply(
        self,
        email: str,
        kind: EventKind,
        *,
        issue: str | None,
        when: datetime,
        source: str,
        detail: str,
        dedupe: str,
    ) -> Action:
        at = when.astimezone(UTC).isoformat(timespec="seconds")
        if issue is None:
            issue = self.history.last_issue(email)
        event = Event(email, "soft" if kind == "block" else kind, issue, at, source, detail)
        if not self.state.record(event, dedupe):
            return "seen"
        if kind in _AT_ONCE:
            reason = REASONS[kind]
        else:
            streak = self.soft_streak(email)
            if streak < self.soft_limit:
                return "counted"
            reason = f"{REASONS['soft']} ({streak} issue{'s' * (streak != 1)} in a row)"
        new = self.sink.suppress(
            email, reason, source=source, issue=issue, when=when, detail=detail
        )
        return "suppressed" if new else "already"

    def soft_streak(self, email: str) -> int:
        """Issues in a row, up to the last one that soft-bounced, that all soft-bounced."""
        bounced = [e.issue for e in self.state.events(email) if e.kind == "soft"]
        known = {i for i in bounced if i is not None}
        sent = self.history.issues(email)
        if not sent or not known <= set(sent):
            # not our ledger's mail: count issues (and reports with none) that bounced
            return len(known) + sum(i is None for i in bounced)
        last = max(sent.index(i) for i in known) if known else len(sent) - 1
        streak = 0
        for issue in reversed(sent[: last + 1]):
            if issue not in known:
                break
            streak += 1
        return streak


@dataclass
class BounceReport:
    """What one run over the bounce mailbox found and did."""

    mailbox: str
    read: int = 0
    already_processed: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    suppressed: list[tuple[str, str, str | None]] = field(default_factory=list)
    counted: list[tuple[str, int]] = field(default_factory=list)
    nameless: int = 0  # failures naming no recipient, with no return path to tell


def read_bounces(
    config: Config, box: Mailbox, *, sink: SuppressionSink, state: BounceState
) -> BounceReport:
    """Read every new message in the bounce mailbox, apply it, and mark it processed."""
    rules = Aftermath(config, sink, state)
    verp = VerpResolver(config)
    report = BounceReport(box.label)
    chunk: list[Returned] = []

    def commit() -> None:
        with state.transaction():
            for item in chunk:
                if state.is_processed(item.key):
                    report.already_processed += 1
                    continue
                report.read += 1
                notice = read_notice(item.raw)
                report.kinds[notice.kind] += 1
                _apply_notice(rules, verp, notice, item.key, report)
                state.mark_processed(item.key)
            sink.flush()
        for item in chunk:
            box.mark(item)
        chunk.clear()

    for item in box.messages():
        chunk.append(item)
        if len(chunk) >= CHUNK:
            commit()
    commit()
    return report


def _apply_notice(
    rules: Aftermath, verp: VerpResolver, notice: Notice, key: str, report: BounceReport
) -> None:
    if notice.kind not in ("bounce", "complaint"):
        return
    signed = verp.resolve(notice.delivered_to) if notice.failures else None
    when = datetime.now(UTC)  # when we learnt it: MTAs' Date headers are their own clocks
    for failure in notice.failures:
        email, issue = failure.email, None
        if signed is not None and (email is None or len(notice.failures) == 1):
            email, issue = signed
        if email is None:
            report.nameless += 1
            continue
        kind: EventKind = failure.severity
        detail = " ".join(x for x in (failure.status, failure.detail) if x)[:500]
        action = rules.apply(
            email,
            kind,
            issue=issue,
            when=when,
            source=f"mailbox ({notice.form})",
            detail=detail,
            dedupe=f"{key}:{address_key(email)}:{kind}",
        )
        report.actions[action] += 1
        if action == "suppressed":
            report.suppressed.append((email, kind, issue))
        elif action == "counted":
            report.counted.append((email, rules.soft_streak(email)))
