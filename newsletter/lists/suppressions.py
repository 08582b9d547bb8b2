"""Where bounces, complaints and provider reports put an address: one narrow seam.

Everything after the send (the bounce mailbox, the SendGrid sync) suppresses through
`SuppressionSink.suppress`, and nothing else, so that pointing it at another store (the
audience store of the reader service) is one line in `open_sink`. `CsvSuppressions` is
today's: rows appended to suppressions.csv, which every send reads.

Listing reads the CSV; removing an address rewrites it atomically and logs who did it,
when and why, to `<state_dir>/suppressions.log` (JSON lines), since taking someone off
the list means mailing them again.
"""

from __future__ import annotations

import csv
import getpass
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol

from newsletter.config import Config
from newsletter.errors import SubscribersError, UsageError
from newsletter.lists.addresses import address_key, validate_address
from newsletter.lists.cells import restore
from newsletter.lists.subscribers import append_suppressions
from newsletter.storage.bounces import existing_state

LOG_NAME = "suppressions.log"


class SuppressionSink(Protocol):
    """Puts an address on the list of those never to mail again."""

    def suppress(
        self,
        email: str,
        reason: str,
        *,
        source: str,
        issue: str | None = None,
        when: datetime | None = None,
        detail: str = "",
    ) -> bool:
        """Suppress `email` for `reason`; True if it was not suppressed before."""
        ...

    def flush(self) -> None:
        """Make every suppression so far durable (a sink may write each one at once)."""
        ...


class CsvSuppressions:
    """suppressions.csv as a sink. The CSV keeps email, reason and date; the issue, source
    and detail of bounces are kept in the bounce state (see `storage.bounces`).

    New rows wait for `flush`, which appends them in one write and fsync: appending reads
    the whole file to keep it free of duplicates, so once per row would be quadratic.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._known: set[str] | None = None
        self._pending: list[tuple[str, str]] = []

    def suppress(
        self,
        email: str,
        reason: str,
        *,
        source: str,
        issue: str | None = None,
        when: datetime | None = None,
        detail: str = "",
    ) -> bool:
        if self._known is None:
            self._known = {suppression_key(row.email) for row in read_suppressions(self.path)}
        key = suppression_key(email)
        if key in self._known:
            return False
        self._known.add(key)
        self._pending.append((email, reason))
        return True

    def flush(self) -> None:
        if self._pending:
            append_suppressions(self.path, self._pending)
            self._pending.clear()


def suppression_key(raw: str) -> str:
    """The key a suppression entry matches readers by, as a send matches them: the address
    normalised if it can be (an invalid one is kept as it is), then `address_key`."""
    raw = raw.strip()
    try:
        return address_key(validate_address(raw))
    except ValueError:
        return address_key(raw)


def open_sink(config: Config) -> SuppressionSink:
    """The sink the after-send commands write to: the one place to point at another store."""
    return CsvSuppressions(config.suppressions_path)


@dataclass(frozen=True)
class Suppression:
    email: str
    reason: str
    added_at: str


def read_suppressions(path: Path) -> Iterator[Suppression]:
    """Every row of a suppression list, in file order; nothing if there is no file."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8-sig", newline="") as file:
        sample = file.readline()
        file.seek(0)
        delimiter = max(",;\t", key=sample.count) if sample else ","
        for row in csv.DictReader(file, delimiter=delimiter):
            # cells as CellWriter wrote them: a leading `'` that guards a formula comes off
            lowered = {
                (k or "").strip().lower(): restore((v or "").strip()) for k, v in row.items()
            }
            if lowered.get("email"):
                yield Suppression(
                    lowered["email"], lowered.get("reason", ""), lowered.get("added_at", "")
                )


def list_suppressions(
    path: Path, *, reason: str | None = None, since: date | None = None
) -> list[Suppression]:
    """The suppressions whose reason contains `reason` and that were added on or after
    `since` (rows without a date are left out when `since` is given)."""
    found = []
    for row in read_suppressions(path):
        if reason and reason.lower() not in row.reason.lower():
            continue
        if since is not None and not (row.added_at and row.added_at[:10] >= since.isoformat()):
            continue
        found.append(row)
    return found


@dataclass(frozen=True)
class Removal:
    email: str
    rows: int
    log: Path


def remove_suppression(config: Config, address: str, *, why: str = "") -> Removal:
    """Take `address` off suppressions.csv (every row, any case) and log who and when."""
    path = config.suppressions_path
    if not path.is_file():
        raise UsageError(f"{path}: no suppression list, so nothing to remove")
    wanted = suppression_key(address)
    with path.open(encoding="utf-8-sig", newline="") as file:
        text = file.read()
    lines = text.splitlines(keepends=True)
    if not lines:
        raise UsageError(f"{address} is not on {path}")
    header = lines[0]
    delimiter = max(",;\t", key=header.count)
    columns = [c.strip().lower() for c in next(csv.reader([header], delimiter=delimiter))]
    if "email" not in columns:
        raise SubscribersError(f"{path}:1: no `email` column in the header")
    at = columns.index("email")
    kept, removed = [header], 0
    for line in lines[1:]:
        cells = next(csv.reader([line], delimiter=delimiter), [])
        if len(cells) > at and suppression_key(restore(cells[at].strip())) == wanted:
            removed += 1
        else:
            kept.append(line)
    if not removed:
        raise UsageError(f"{address} is not on {path}")
    _replace(path, "".join(kept))
    state = existing_state(config.state_dir)
    if state is not None:
        with state:
            state.forget(address.strip())  # its soft bounces so far no longer count
    log = config.state_dir / LOG_NAME
    log.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "who": _who(),
        "action": "remove",
        "email": address.strip(),
        "rows": removed,
        "why": why,
    }
    with log.open("a", encoding="utf-8") as file:
        file.write(json.dumps(entry) + "\n")
        file.flush()
        os.fsync(file.fileno())
    return Removal(address.strip(), removed, log)


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _replace(path: Path, text: str) -> None:
    """Write the whole file anew and swap it in, so a crash leaves the old or the new."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
