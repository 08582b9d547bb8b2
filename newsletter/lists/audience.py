"""The audience and the suppressions as CSV: what an editor imports, exports and sends to.

The store (`storage/`) is the one place of truth the reader service and the CLI share; CSV
stays first-class around it. `import_audience` and `export_audience` round-trip every column
(status, tags, personalisation fields, the consent record) without loss; `snapshot` writes
the subscribed members as an ordinary subscriber list, so a send to the audience is a send
to a file whose hash the manifest records, like any other. The suppression list imports from
`suppressions.csv` (workspaces from before the store) and exports back to it.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, cast

from newsletter.delivery.manifest import sha256_file
from newsletter.errors import SubscribersError, UsageError
from newsletter.lists.addresses import validate_address
from newsletter.storage.store import (
    MEMBER_STATUSES,
    SUPPRESSION_KINDS,
    Consent,
    Member,
    MemberStatus,
    Store,
    Suppression,
    SuppressionKind,
)

#: The audience's own columns, in export order; any other column is a personalisation field.
AUDIENCE_COLUMNS = (
    "email",
    "name",
    "status",
    "tags",
    "consent_asked_at",
    "consent_confirmed_at",
    "consent_source",
    "consent_ip",
)
SUPPRESSION_COLUMNS = ("email", "reason", "kind", "source", "issue", "added_at")
_BOUNCE_CODE = re.compile(r"\s*5\d\d\b")


@dataclass
class Imported:
    """What an import did, row by row: nothing is dropped without a word."""

    added: int = 0
    updated: int = 0
    kept_out: list[str] = field(default_factory=list)  # suppressed: imported, not subscribed
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (line, email, why)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row with lowercased column names) of a UTF-8 CSV file, as Excel writes them."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SubscribersError(
            f"{path}: no such file; give a CSV file with an `email` column"
        ) from None
    except UnicodeDecodeError:
        raise SubscribersError(
            f"{path}: not UTF-8 text; save it as UTF-8 CSV and try again"
        ) from None
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = max(",;\t", key=first.count)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if not reader.fieldnames or "email" not in [c.strip().lower() for c in reader.fieldnames]:
        raise SubscribersError(f"{path}:1: no `email` column; name the column of addresses `email`")
    try:
        for row in reader:
            clean = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            if any(clean.values()):
                yield reader.line_num, clean
    except csv.Error as e:
        raise SubscribersError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None


def _write_atomic(path: Path, write: Iterable[list[str]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerows(write)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


# --- the audience ---------------------------------------------------------------------------


def import_audience(store: Store, path: Path, *, source: str | None = None) -> Imported:
    """Add or update a member for every row. A suppressed address is imported as it stands
    in the store (unsubscribed, bounced, complained), never subscribed again by a file."""
    result = Imported()
    source = source or f"import of {path.name}"
    for line, row in _rows(path):
        raw = row.get("email", "")
        try:
            email = validate_address(raw)
        except ValueError as e:
            result.skipped.append((line, raw, f"invalid address: {e}"))
            continue
        status = row.get("status", "").lower() or "subscribed"
        if status not in MEMBER_STATUSES:
            why = f"unknown status {status!r}: use one of {', '.join(MEMBER_STATUSES)}"
            result.skipped.append((line, raw, why))
            continue
        suppressed = store.suppression(email)
        if suppressed is not None and status in ("subscribed", "pending"):
            status = {"bounce": "bounced", "complaint": "complained"}.get(
                suppressed.kind, "unsubscribed"
            )
            result.kept_out.append(email)
        fields = {k: v for k, v in row.items() if k and k not in AUDIENCE_COLUMNS}
        member = Member(
            email=email,
            name=row.get("name", ""),
            status=cast(MemberStatus, status),
            tags=tuple(t.strip() for t in row.get("tags", "").split(";") if t.strip()),
            fields=fields,
            consent=Consent(
                asked_at=row.get("consent_asked_at", "") or _now(),
                confirmed_at=row.get("consent_confirmed_at", ""),
                source=row.get("consent_source", "") or source,
                ip=row.get("consent_ip", ""),
            ),
        )
        if store.member(email) is None:
            result.added += 1
        else:
            result.updated += 1
        store.put_member(member)
    return result


def audience_rows(store: Store, status: MemberStatus | None = None) -> Iterator[list[str]]:
    """The header, then one row per member: every column an import reads back."""
    members = list(store.members(status))
    extra = sorted({k for m in members for k in m.fields})
    yield [*AUDIENCE_COLUMNS, *extra]
    for m in members:
        c = m.consent
        yield [
            m.email,
            m.name,
            m.status,
            ";".join(m.tags),
            c.asked_at,
            c.confirmed_at,
            c.source,
            c.ip,
            *(m.fields.get(k, "") for k in extra),
        ]


def export_audience(store: Store, out: Path | IO[str], status: MemberStatus | None = None) -> int:
    """Write the audience as CSV (to a file, atomically, or a stream); returns the members."""
    rows = list(audience_rows(store, status))
    if isinstance(out, Path):
        _write_atomic(out, rows)
    else:
        csv.writer(out, lineterminator="\n").writerows(rows)
    return len(rows) - 1


def snapshot(store: Store, path: Path) -> int:
    """The subscribed members as a subscriber list for `send`; returns how many."""
    members = list(store.members("subscribed"))
    extra = sorted({k for m in members for k in m.fields if k not in ("first_name",)})
    rows: list[list[str]] = [["email", "name", "tags", *extra]]
    rows += [
        [m.email, m.name, ";".join(m.tags), *(m.fields.get(k, "") for k in extra)] for m in members
    ]
    _write_atomic(path, rows)
    return len(members)


# --- the suppressions -----------------------------------------------------------------------


def _kind(reason: str, given: str) -> SuppressionKind:
    for kind in SUPPRESSION_KINDS:
        if given == kind:
            return kind
    text = reason.lower()
    if text.startswith("unsubscribe"):
        return "unsubscribe"
    if _BOUNCE_CODE.match(text) or "bounce" in text:
        return "bounce"
    if "spam" in text or "complain" in text:
        return "complaint"
    return "manual"


def import_suppressions_csv(store: Store, path: Path, *, only_if_changed: bool = False) -> int:
    """Put every address of a suppressions CSV into the store; returns how many were new.

    With `only_if_changed`, a file already imported with the same contents is skipped, so
    opening the store stays cheap and an address resubscribed since is not suppressed again.
    """
    if not path.is_file():
        return 0
    digest = sha256_file(path)
    if only_if_changed and not store.note_import(str(path.resolve()), digest):
        return 0
    entries = []
    for _line, row in _rows(path):
        raw = row.get("email", "")
        if not raw:
            continue
        try:
            email = validate_address(raw)
        except ValueError:
            email = raw  # an invalid entry is still kept: it must never be mailed either
        reason = row.get("reason", "") or "imported from " + path.name
        entries.append(
            Suppression(
                email=email,
                reason=reason,
                kind=_kind(reason, row.get("kind", "")),
                source=row.get("source", "") or "csv",
                issue=row.get("issue") or None,
                added_at=row.get("added_at", ""),
            )
        )
    added = store.suppress(entries)
    if not only_if_changed:
        store.note_import(str(path.resolve()), digest)
    return added


def export_suppressions_csv(store: Store, path: Path) -> int:
    """Write every suppression to a CSV file; a later open does not import it back again."""
    rows = [list(SUPPRESSION_COLUMNS)]
    rows += [
        [s.email, s.reason, s.kind, s.source, s.issue or "", s.added_at]
        for s in store.suppressions()
    ]
    _write_atomic(path, rows)
    store.note_import(str(path.resolve()), sha256_file(path))
    return len(rows) - 1


# --- by hand --------------------------------------------------------------------------------


def add_by_hand(store: Store, address: str, name: str = "") -> Member:
    """Subscribe an address the editor vouches for; a suppressed one stays out."""
    try:
        email = validate_address(address)
    except ValueError as e:
        raise UsageError(f"{address!r} is not a valid email address: {e}") from None
    if store.suppression(email) is not None:
        raise UsageError(
            f"{email} is on the suppression list; if they asked to come back, "
            f"run `newsletter audience resubscribe {email}`"
        )
    old = store.member(email)
    now = _now()
    member = Member(
        email=email,
        name=name or (old.name if old else ""),
        tags=old.tags if old else (),
        fields=old.fields if old else {},
        consent=Consent(asked_at=now, confirmed_at=now, source="added by the editor"),
    )
    store.put_member(member)
    return member


def remove_by_hand(store: Store, address: str) -> bool:
    """Unsubscribe an address for good; whether it was new on the suppression list."""
    email = address.strip()
    if "@" not in email:
        raise UsageError(f"{address!r} is not an email address")
    return store.suppress([Suppression(email, "removed by the editor", "unsubscribe", "cli")]) > 0


def resubscribe_by_hand(store: Store, address: str) -> bool:
    """Take an address off the suppression list and mark its member subscribed."""
    return store.resubscribe(address)


def audience_snapshot(store: Store, build_dir: Path, issue_path: Path) -> Path:
    """Write the subscribed members to `build/audience/<issue>.csv` for a send without --to."""
    path = build_dir / "audience" / f"{issue_path.stem}.csv"
    if snapshot(store, path) == 0:
        raise UsageError(
            "the audience has no subscribed members; give a list with --to LIST.csv, or add "
            "readers with `newsletter audience import` or the reader service's signup form"
        )
    return path
