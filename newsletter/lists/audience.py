"""The audience and the suppressions as CSV: what an editor imports, exports and sends to.

The store (`storage/`) is the one place of truth the reader service and the CLI share; CSV
stays first-class around it. `import_audience` and `export_audience` round-trip every column
(status, tags, personalisation fields, the consent record) without loss; `snapshot` writes
the subscribed members as an ordinary subscriber list, so a send to the audience is a send
to a file whose hash the manifest records, like any other. (The suppression list's CSV
files are the store's own business: `storage/csvfiles.py`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, cast

from newsletter.errors import UsageError
from newsletter.lists.addresses import validate_address
from newsletter.lists.cells import CellWriter
from newsletter.storage.csvfiles import csv_rows, write_csv_atomic
from newsletter.storage.store import (
    MEMBER_STATUSES,
    Consent,
    Member,
    MemberStatus,
    Store,
    Suppression,
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


@dataclass
class Imported:
    """What an import did, row by row: nothing is dropped without a word."""

    added: int = 0
    updated: int = 0
    kept_out: list[str] = field(default_factory=list)  # suppressed: imported, not subscribed
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (line, email, why)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- the audience ---------------------------------------------------------------------------


def import_audience(store: Store, path: Path, *, source: str | None = None) -> Imported:
    """Add or update a member for every row. A suppressed address is imported as it stands
    in the store (unsubscribed, bounced, complained), never subscribed again by a file."""
    result = Imported()
    source = source or f"import of {path.name}"
    for line, row in csv_rows(path):
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
        write_csv_atomic(out, rows)
    else:
        cells = CellWriter(out, lineterminator="\n")
        for row in rows:
            cells.writerow(row)
    return len(rows) - 1


def snapshot(store: Store, path: Path) -> int:
    """The subscribed members as a subscriber list for `send`; returns how many."""
    members = list(store.members("subscribed"))
    extra = sorted({k for m in members for k in m.fields if k not in ("first_name",)})
    rows: list[list[str]] = [["email", "name", "tags", *extra]]
    rows += [
        [m.email, m.name, ";".join(m.tags), *(m.fields.get(k, "") for k in extra)] for m in members
    ]
    write_csv_atomic(path, rows, for_people=False)  # `send` reads it as it is
    return len(members)


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
