"""Suppression lists as CSV files, and the small CSV reader and writer the store's files share.

`open_store` imports `suppressions.csv` (workspaces from before the store, and hand edits)
through here; `newsletter audience export --suppressions` writes the table back. Addresses
are kept as written: a send normalises them when it compares.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from newsletter.errors import SubscribersError
from newsletter.lists.cells import CellWriter, restore
from newsletter.storage.store import SUPPRESSION_KINDS, Store, Suppression, SuppressionKind

SUPPRESSION_COLUMNS = ("email", "reason", "kind", "source", "issue", "added_at")
_BOUNCE_CODE = re.compile(r"\s*5\d\d\b")


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
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
            clean = {(k or "").strip().lower(): restore((v or "").strip()) for k, v in row.items()}
            if any(clean.values()):
                yield reader.line_num, clean
    except csv.Error as e:
        raise SubscribersError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None


def write_csv_atomic(path: Path, write: Iterable[list[str]], *, for_people: bool = True) -> None:
    """Write rows to `path` through a temporary file: a reader never sees half a file.

    Files for people (exports) have their cells neutralised for spreadsheets, and
    `csv_rows` restores them; `for_people=False` is for a list only `send` reads.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        if for_people:
            cells = CellWriter(fh, lineterminator="\n")
            for row in write:
                cells.writerow(row)
        else:
            csv.writer(fh, lineterminator="\n").writerows(write)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


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
    digest = _sha256(path)
    if only_if_changed and not store.note_import(str(path.resolve()), digest):
        return 0
    entries = []
    for _line, row in csv_rows(path):
        raw = row.get("email", "")
        if not raw:
            continue
        # Kept as written: a send normalises it when it compares, and an invalid entry
        # must never be mailed either.
        email = raw
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
    write_csv_atomic(path, rows)
    store.note_import(str(path.resolve()), _sha256(path))
    return len(rows) - 1
