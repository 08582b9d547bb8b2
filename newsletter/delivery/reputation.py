"""Per issue, what came back after the send, as rates against what was sent.

Mailbox providers judge a sender by these rates. Gmail's rules for bulk senders: keep
spam complaints under 0.3%, and ideally under 0.1%; a permanent failure rate of 1% or
more (Buttondown's line) means the list holds dead addresses. `issue_feedback` says when
a rate passes one of those lines.

The suppressions an issue led to are counted from one place, the store, whatever wrote
them: `newsletter bounces`, `newsletter sync sendgrid`, the SMTP server's refusals during
the send, SendGrid's webhook and the reader service's unsubscribes. Each address counts
once (the store keeps one suppression per address, with the issue that led to it); a
soft-bounce streak that ended in a suppression counts as a bounce, since the address is
dead by then. Soft bounces that did not (yet) suppress anyone are no suppression: they
come from the bounce state that `newsletter bounces` and `sync sendgrid` keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from newsletter.config import Config
from newsletter.storage.bounces import existing_state
from newsletter.storage.store import open_existing_store

COMPLAINTS_WARN = 0.001
COMPLAINTS_LIMIT = 0.003
HARD_LIMIT = 0.01


@dataclass(frozen=True)
class IssueFeedback:
    sent: int
    hard: int = 0
    soft: int = 0
    complained: int = 0
    unsubscribed: int = 0
    warnings: list[str] = field(default_factory=list)

    def rate(self, count: int) -> float:
        return count / self.sent if self.sent else 0.0

    def to_json(self) -> dict[str, Any]:
        counts = {
            "bounced_hard": self.hard,
            "bounced_soft": self.soft,
            "complained": self.complained,
            "unsubscribed": self.unsubscribed,
        }
        return {
            "sent": self.sent,
            **counts,
            "rates": {k: round(self.rate(v), 6) for k, v in counts.items()},
            "warnings": self.warnings,
        }


def issue_feedback(config: Config, issue: str, sent: int) -> IssueFeedback | None:
    """Bounces, complaints and unsubscribes that `issue` led to, with warnings; None if
    nothing is known: no suppression names the issue and no bounce run has looked."""
    suppressed: dict[str, int] = {}
    store = open_existing_store(config)
    if store is not None:
        with store:
            suppressed = store.suppressions_by_issue(issue)
    state = existing_state(config.state_dir)
    if state is None and not suppressed:
        return None
    soft = 0
    if state is not None:
        with state:
            soft = state.issue_counts(issue)["soft"]
    found = IssueFeedback(
        sent,
        hard=suppressed.get("bounce", 0),
        soft=soft,
        complained=suppressed.get("complaint", 0),
        unsubscribed=suppressed.get("unsubscribe", 0),
    )
    found.warnings.extend(thresholds(found))
    return found


def thresholds(found: IssueFeedback) -> list[str]:
    warnings = []
    complaints = found.rate(found.complained)
    if complaints >= COMPLAINTS_LIMIT:
        warnings.append(
            f"spam complaints at {complaints:.2%}: at 0.3% or more Gmail filters or refuses "
            "bulk mail; check who is on the list and that they asked to be"
        )
    elif complaints >= COMPLAINTS_WARN:
        warnings.append(
            f"spam complaints at {complaints:.2%}: Gmail asks bulk senders to stay under 0.1%"
        )
    hard = found.rate(found.hard)
    if hard >= HARD_LIMIT:
        warnings.append(
            f"permanent failures at {hard:.2%}: 1% or more means dead addresses on the list; "
            "they are suppressed now, but check where the list came from"
        )
    return warnings
