"""What a send or a dry run did, in numbers a person and a script can both read.

The send fills a `Report` as it goes; the CLI prints it (or its JSON). A send that stops
part way raises `SendStopped` carrying the report, so who got the issue and who did not
is known whatever happened.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from newsletter.lists.subscribers import Skipped

#: Skipped rows kept in memory for the report; all of them go to the skipped-rows CSV.
SKIPPED_SHOWN = 1000

#: Told (done, total or None) as a send or a check goes along.
Progress = Callable[[int, int | None], None]


@dataclass
class Report:
    """What a send (or a dry run) did, in numbers a person and a script can both read."""

    issue: str
    subject: str
    provider: str
    list_path: str
    dry_run: bool = False
    sandbox: bool = False
    rows: int = 0
    recipients: int = 0
    sent: int = 0
    already_sent: int = 0
    unknown: int = 0
    unknown_before: int = 0
    failed: int = 0
    rejected: int = 0
    rejected_before: int = 0
    retries: int = 0
    batches: int = 0
    seconds: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_rows: list[Skipped] = field(default_factory=list)
    skipped_file: str | None = None
    previews: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    outbox: str | None = None
    #: The provider's cap (`rate_limit`), and how long the send takes at it at best.
    rate_limit: str | None = None
    rate_seconds: float | None = None
    stopped: str | None = None
    #: What a real send refuses (check errors, an issue already sent under another id):
    #: filled by the dry run, so the editor sees it before the confirmation.
    refused: list[str] = field(default_factory=list)
    #: The command that resumes a send that stopped part way (the CLI knows how it was run).
    resume: str | None = None
    #: `send --at`: the time (ISO 8601 with its offset), what happens until then, and the
    #: provider's batch id of a send it holds (what `newsletter cancel` cancels).
    send_at: str | None = None
    send_at_note: str | None = None
    scheduled_batch: str | None = None

    @property
    def to_send(self) -> int:
        """Recipients this run would mail (a dry run) or tried to mail."""
        return self.recipients - self.already_sent - self.unknown_before - self.rejected_before

    def skip(self, row: Skipped) -> None:
        self.skipped[row.reason.value] += 1
        if len(self.skipped_rows) < SKIPPED_SHOWN:
            self.skipped_rows.append(row)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped"] = dict(self.skipped)
        data["skipped_rows"] = [
            {"line": s.line, "email": s.email, "reason": s.reason.value, "detail": s.detail}
            for s in self.skipped_rows
        ]
        data["to_send"] = self.to_send
        return data
