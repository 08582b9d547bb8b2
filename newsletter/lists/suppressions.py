"""Where bounces, complaints and provider reports put an address: one narrow seam.

Everything after the send (the bounce mailbox, the SendGrid sync) suppresses through
`SuppressionSink.suppress`, and nothing else, so that pointing it at another store (the
audience store of the reader service) is one line in `open_sink`. `StoreSuppressions`
writes to the workspace's store, where every send, the reader service and `audience`
find them; `CsvSuppressions` appends to a suppressions.csv (the store imports that file).

Listing reads the store; removing an address lifts it there (and takes it off
suppressions.csv, so no re-import brings it back) and logs who did it, when and why, to
`<state_dir>/suppressions.log` (JSON lines), since taking someone off the list means
mailing them again.
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
from newsletter.lists.suppression_csv import append_suppressions
from newsletter.storage.bounces import existing_state
from newsletter.storage.store import Store, SuppressionKind, open_store
from newsletter.storage.store import Suppression as StoredSuppression

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


class StoreSuppressions:
    """The workspace's store as a sink. New rows wait for `flush`, one transaction a chunk."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._store: Store | None = None
        self._pending: dict[str, StoredSuppression] = {}

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
        key = suppression_key(email)
        if key in self._pending:
            return False
        if self._store is None:
            self._store = open_store(self.config)
        if self._store.suppression(email) is not None:
            return False
        at = (when or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
        self._pending[key] = StoredSuppression(
            email.strip(), reason, _kind(reason), source, issue, at
        )
        return True

    def flush(self) -> None:
        if self._store is None:
            return
        try:
            if self._pending:
                self._store.suppress(list(self._pending.values()))
                self._pending.clear()
        finally:
            self._store.close()
            self._store = None


def _kind(reason: str) -> SuppressionKind:
    """The store's kind for an after-send reason (see `aftermath.REASONS`)."""
    lowered = reason.lower()
    if "complaint" in lowered:
        return "complaint"
    if "unsubscribe" in lowered:
        return "unsubscribe"
    return "bounce"


def open_sink(config: Config) -> SuppressionSink:
    """The sink the after-send commands write to: the one place to point at another store."""
    return StoreSuppressions(config)


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
    config: Config, *, reason: str | None = None, since: date | None = None
) -> list[Suppression]:
    """The suppressions whose reason contains `reason` and that were added on or after
    `since` (rows without a date are left out when `since` is given)."""
    found = []
    with open_store(config) as store:
        rows = [Suppression(s.email, s.reason, s.added_at) for s in store.suppressions()]
    for row in rows:
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
    """Lift `address`'s suppression in the store, take it off suppressions.csv (every row,
    any case, so no re-import brings it back), and log who and when."""
    with open_store(config) as store:
        lifted = store.unsuppress(address)
    removed = _remove_from_csv(config.suppressions_path, address)
    if not lifted and not removed:
        raise UsageError(f"{address} is not suppressed")
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
        "rows": max(removed, int(lifted)),
        "why": why,
    }
    with log.open("a", encoding="utf-8") as file:
        file.write(json.dumps(entry) + "\n")
        file.flush()
        os.fsync(file.fileno())
    return Removal(address.strip(), max(removed, int(lifted)), log)


def _remove_from_csv(path: Path, address: str) -> int:
    """Rows of `address` taken off a suppressions.csv, rewritten atomically; 0 if none."""
    if not path.is_file():
        return 0
    wanted = suppression_key(address)
    with path.open(encoding="utf-8-sig", newline="") as file:
        text = file.read()
    lines = text.splitlines(keepends=True)
    if not lines:
        return 0
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
    if removed:
        _replace(path, "".join(kept))
    return removed


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
