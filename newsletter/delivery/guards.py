"""What a real send refuses before anyone is mailed, and what it only warns about.

A send is the one step that cannot be undone, so it runs the same preflight as
`newsletter check` (a leftover `TODO`, a `javascript:` link) and looks in the ledger for
the same issue already sent under another id (a renamed file). Each refusal names what
to fix and the flag that overrides it; the dry run and the confirmation show the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from newsletter.content.check import preflight
from newsletter.delivery.campaign import Campaign
from newsletter.storage.ledger import is_rehearsal
from newsletter.storage.store import LedgerStore
from newsletter.words import plural

#: The flags that override each kind of refusal, as the CLI spells them.
FORCE_FLAG = "--force"
AS_NEW_ISSUE_FLAG = "--as-new-issue"


@dataclass
class Findings:
    """Refusals (a send stops) and warnings (shown in the dry run and the confirmation)."""

    refused: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def content_findings(campaign: Campaign, *, force: bool) -> Findings:
    """`newsletter check`'s errors refuse the send (unless forced); its warnings are shown."""
    found = Findings()
    findings = preflight(campaign.issue, campaign.rendered, campaign.config)
    for finding in findings:
        if finding.level == "error" and not force:
            found.refused.append(f"{finding} (fix it, or add {FORCE_FLAG} to send anyway)")
        else:
            found.warnings.append(str(finding))
    return found


def sent_under_another_id(
    ledger: LedgerStore, campaign: Campaign, issue_sha256: str, provider: str
) -> list[str]:
    """Earlier sends that mailed readers this same issue under another id.

    The ledger knows recipients by issue id, and the id is the file's name: a renamed or
    copied file would mail everyone again. The same issue is the same file content
    (SHA-256), or the same date and title. Rehearsals and sandbox sends mailed nobody.
    """
    issue = campaign.issue
    found: list[str] = []
    if is_rehearsal(provider):
        return found
    mailed: dict[str, dict[int, int]] = {}
    for record in ledger.sends():
        m = record.manifest
        if record.issue == issue.id or m.dry_run or is_rehearsal(record.provider):
            continue
        same_content = m.issue_sha256 == issue_sha256
        same_title = bool(m.title) and (m.title, m.date) == (issue.title, str(issue.date))
        if not (same_content or same_title):
            continue
        if record.issue not in mailed:
            mailed[record.issue] = ledger.sent_per_send(record.issue)
        count = mailed[record.issue].get(record.id, 0)
        if not count:
            continue
        why = "the same file content" if same_content else "the same date and title"
        when = record.started_at[:16].replace("T", " ")
        found.append(
            f"this issue was already sent as {record.issue} (send {record.id}, {when} UTC, "
            f"{plural(count, 'recipient')} mailed): {why}. A renamed file is a new issue id, so "
            f"everyone would get it again; if it really is a new issue, add {AS_NEW_ISSUE_FLAG}"
        )
    return found
