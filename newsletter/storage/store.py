"""The storage seam: one interface for everything a workspace keeps between runs.

A `Store` owns the ledger (who was sent which issue), the send lock (one send of an issue at a
time), the record of sends waiting in the foreground for their time (`send --at`), the
suppressions (addresses never to mail, whatever put them there: a bounce, a complaint, a
reader's unsubscribe, the editor) and the audience (subscribers with their status and consent
record). `open_store(config)` is the one place a store is opened, so the editor's
CLI and the reader's service (`newsletter serve`) share it safely at the same moment.

SQLite (`storage/sqlite.py`) is the embedded default. A PostgreSQL store, for a team whose
service and senders run on different machines, is another class with these methods and one
more branch in `open_store` (chosen by a connection URL): nothing outside `storage/` sees SQL.
What it would take: the same tables; `suppress` as INSERT ... ON CONFLICT DO NOTHING;
`confirm_signup` as UPDATE ... WHERE used_at IS NULL RETURNING, as here; `send_lock` as
`pg_try_advisory_lock` on the issue's hash (held by the session, so a killed sender frees it);
a waiting send as a row whose liveness is such a lock too (`storage/waiting.py` says why a PID
is not enough);
and a ledger with the methods of `LedgerStore` below, which are the contract (SQLite's is
`storage/ledger.py`'s `Ledger`, named by nothing outside `storage/`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, get_args

from newsletter.lists.addresses import address_key

if TYPE_CHECKING:
    from collections import Counter
    from datetime import datetime
    from pathlib import Path
    from types import TracebackType

    from newsletter.config import Config
    from newsletter.storage.ledger import Delivery, Manifest, SendRecord
    from newsletter.storage.schedules import Schedule
    from newsletter.storage.waiting import WaitingSend

#: Where a subscriber stands. Only `subscribed` members are mailed.
MemberStatus = Literal["subscribed", "pending", "unsubscribed", "bounced", "complained"]
MEMBER_STATUSES: tuple[MemberStatus, ...] = get_args(MemberStatus)

#: Why an address is suppressed, in the few kinds that decide what may lift it.
SuppressionKind = Literal["unsubscribe", "bounce", "complaint", "manual"]
SUPPRESSION_KINDS: tuple[SuppressionKind, ...] = get_args(SuppressionKind)

#: The member status each kind of suppression leaves behind.
STATUS_OF_KIND: dict[SuppressionKind, MemberStatus] = {
    "unsubscribe": "unsubscribed",
    "bounce": "bounced",
    "complaint": "complained",
    "manual": "unsubscribed",
}


@dataclass(frozen=True)
class Suppression:
    """An address never to mail, and why: the reason is shown to the editor as it came."""

    email: str
    reason: str
    kind: SuppressionKind = "manual"
    source: str = "cli"  # what wrote it: cli, send, service, webhook, csv
    issue: str | None = None  # the issue whose mail led to it, when known
    added_at: str = ""


@dataclass(frozen=True)
class Consent:
    """When and where a subscriber asked to be mailed, and when they confirmed it."""

    asked_at: str = ""
    confirmed_at: str = ""
    source: str = ""  # the form or import it came from
    ip: str = ""


@dataclass(frozen=True)
class Member:
    """One subscriber of the audience, with every column an imported CSV row carried."""

    email: str
    name: str = ""
    status: MemberStatus = "subscribed"
    tags: tuple[str, ...] = ()
    fields: dict[str, str] = field(default_factory=dict)
    consent: Consent = Consent()
    updated_at: str = ""

    @property
    def key(self) -> str:
        return address_key(self.email)


@dataclass(frozen=True)
class Signup:
    """A double opt-in request waiting for its confirmation link to be followed."""

    nonce: str
    email: str
    name: str
    asked_at: str
    source: str
    ip: str


class LedgerStore(Protocol):
    """The send record: who was mailed which issue, and in which state each recipient is.

    Exactly-once rests on one order: a recipient is `pending` on disk before their request
    leaves, and is settled (`sent`, `rejected`, `failed`, `unknown`) only from the provider's
    answer. A claim (`begin_batch`, `mark_messages`) refuses a key already `sent` or `rejected`
    and takes over a `failed`, `unknown` or `pending` one; `recover` turns what a killed process
    left `pending` into `unknown` (a send skips those unless asked to retry them). Each write
    is one transaction.
    Keys are `address_key`s; `rehearsal` rows (outbox, dry runs) never count as deliveries.
    """

    #: Where the ledger is kept, named in messages to the editor.
    path: Path

    def close(self) -> None:
        """Release the connection; what was committed stays whole."""
        ...

    def __enter__(self) -> LedgerStore: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the ledger."""
        ...

    def for_threads(self) -> LedgerStore:
        """A second connection to the same ledger, usable from worker threads one at a time."""
        ...

    # --- a send and its batches ---
    def start_send(self, manifest: Manifest) -> int:
        """Record that a send begins, with its manifest, before any batch; returns its id."""
        ...

    def finish_send(self, send_id: int, *, status: str, counts: Mapping[str, int]) -> None:
        """Record how a send ended and how many recipients ended in each state."""
        ...

    def recover(self, issue: str) -> int:
        """Mark `pending` rows of a killed send `unknown` (under `send_lock`); returns how many."""
        ...

    def statuses(
        self, issue: str, keys: Sequence[str], *, rehearsal: bool = False
    ) -> dict[str, str]:
        """The status of each key that has a row: what decides who a send skips."""
        ...

    def begin_batch(self, send_id: int, issue: str, recipients: Sequence[tuple[str, str]]) -> int:
        """Commit (key, email) recipients `pending` before the request; refuses a done key."""
        ...

    def open_batch(self, send_id: int, issue: str, size: int) -> int:
        """A batch whose recipients are marked one by one (`mark_messages`) as each leaves."""
        ...

    def mark_messages(
        self,
        issue: str,
        pending: Sequence[tuple[int, str, str]],
        sent: Sequence[tuple[int, str, str]] = (),
    ) -> None:
        """Commit (batch, key, email) `pending` before those messages leave, and (batch, key,
        provider id) `sent`, in one durable transaction."""
        ...

    def finish_batch(
        self,
        batch_id: int,
        status: str,
        *,
        provider_id: str | None = None,
        error: str | None = None,
        rejected: Mapping[str, str] | None = None,
        each: Mapping[str, tuple[str, str | None, str | None]] | None = None,
    ) -> None:
        """Settle a batch from the provider's answer, once, in one transaction."""
        ...

    def checkpoint(self) -> None:
        """Make the committed record whole in the ledger's own storage (end of a send)."""
        ...

    # --- reading ---
    def counts(self, issue: str, *, rehearsal: bool = False) -> Counter[str]:
        """Recipients of an issue per status: real deliveries, or the rehearsals."""
        ...

    def deliveries(
        self, issue: str, status: str | None = None, *, rehearsal: bool = False
    ) -> Iterator[Delivery]:
        """Every recipient row of an issue (optionally one status), streamed in key order."""
        ...

    def sends(self, issue: str | None = None) -> list[SendRecord]:
        """Every send (of one issue, or of all), oldest first, with manifests and counts."""
        ...

    def sent_per_send(self, issue: str) -> dict[int, int]:
        """Recipients of the issue now `sent`, by the send that mailed them (killed ones too)."""
        ...

    def sent_since(self, provider: str, since: datetime) -> list[float]:
        """When (epoch seconds) each recipient sent through `provider` after `since` was."""
        ...

    def was_sent(self, issue: str) -> bool:
        """Whether any reader received the issue (rehearsals do not count)."""
        ...

    def was_delivered(self, issue: str, now: datetime) -> bool:
        """`was_sent`, less what a provider still holds for after `now` (`send --at`)."""
        ...

    def backup(self, dest: Path) -> None:
        """A whole, consistent copy of the ledger at `dest`, safe while a send writes."""
        ...

    # --- hard bounces on their way to the suppressions ---
    def record_bounces(self, issue: str, bounces: Sequence[tuple[str, str, str]]) -> None:
        """Keep (key, email, reason) hard bounces until they are on the suppression list."""
        ...

    def unsuppressed_bounces(self) -> list[tuple[str, str, str, str]]:
        """Hard bounces not yet suppressed, as (key, email, reason, issue)."""
        ...

    def bounces_suppressed(self, keys: Sequence[str]) -> None:
        """Mark hard bounces as written to the suppression list."""
        ...

    # --- sends a provider holds for later ---
    def record_schedule(
        self, issue: str, send_id: int, provider: str, provider_batch: str, send_at: datetime
    ) -> int:
        """Record a scheduled send before its first request, so a killed one can be cancelled."""
        ...

    def schedules(self, issue: str) -> list[Schedule]:
        """The issue's scheduled sends, oldest first, each with the recipients it holds."""
        ...

    def cancel_schedule(self, schedule_id: int, reason: str) -> int:
        """Mark a cancelled schedule's recipients `failed` (under `send_lock`); returns how many."""
        ...


class Store(Protocol):
    """What any storage backend provides. Each write is one short transaction of its own."""

    def ledger(self) -> LedgerStore:
        """The send ledger; closed with the store."""
        ...

    def has_ledger(self) -> bool:
        """Whether anything was ever sent from here (reading must not create a ledger)."""
        ...

    def send_lock(self, issue: str) -> AbstractContextManager[None]:
        """Hold the one right to send `issue`; a second holder is refused, not queued."""
        ...

    def hold_waiting(
        self, issue: str, provider: str, send_at: datetime
    ) -> AbstractContextManager[WaitingSend]:
        """Show this process as waiting in the foreground to send `issue` at `send_at`, until
        the block ends or the process dies (`waiting_sends` below reads it)."""
        ...

    # --- suppressions ---
    def suppress(self, entries: Iterable[Suppression]) -> int:
        """Add suppressions and mark matching members; returns how many addresses were new."""
        ...

    def unsuppress(self, email: str) -> bool:
        """Lift an address's suppression; whether there was one."""
        ...

    def suppression(self, email: str) -> Suppression | None: ...

    def suppressions(self) -> Iterator[Suppression]:
        """Every suppression, oldest first."""
        ...

    def suppressed_addresses(self) -> Iterator[str]:
        """Just the addresses: what a send needs, streamed."""
        ...

    def suppressions_by_issue(self, issue: str) -> dict[str, int]:
        """Suppressions an issue's mail led to, counted by kind (for `newsletter status`)."""
        ...

    def note_import(self, name: str, digest: str) -> bool:
        """Record that a file with this content was imported; False if it already was."""
        ...

    # --- the audience ---
    def member(self, email: str) -> Member | None: ...

    def members(self, status: MemberStatus | None = None) -> Iterator[Member]:
        """Members in address order, optionally of one status, streamed."""
        ...

    def put_member(self, member: Member) -> None:
        """Add a member or replace the one with the same address."""
        ...

    def set_status(self, email: str, status: MemberStatus) -> bool:
        """Change a member's status; whether there was such a member."""
        ...

    def resubscribe(self, email: str) -> bool:
        """Lift the suppression and mark the member subscribed; whether anything changed."""
        ...

    def begin_signup(self, signup: Signup) -> None:
        """Keep a signup until its confirmation link is followed (or expires)."""
        ...

    def confirm_signup(self, nonce: str, confirmed_at: str) -> Member | None:
        """Subscribe the signup's address with its consent; None if unknown or already used."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc: object) -> None: ...


def open_store(config: Config) -> Store:
    """The workspace's store: the one place that decides which backend holds the state.

    The first open imports `suppressions.csv` (and again whenever the file changes), so a
    workspace from before the store loses no suppression.
    """
    from newsletter.storage.csvfiles import import_suppressions_csv
    from newsletter.storage.sqlite import SQLiteStore

    store = SQLiteStore(config.state_dir)
    try:
        import_suppressions_csv(store, config.suppressions_path, only_if_changed=True)
    except BaseException:
        store.close()
        raise
    return store


def open_existing_store(config: Config) -> Store | None:
    """The store if this workspace has one, else None: for reading without creating anything."""
    from newsletter.storage.sqlite import SQLiteStore

    if not SQLiteStore.exists(config.state_dir):
        return None
    return open_store(config)


def existing_ledger(config: Config) -> LedgerStore | None:
    """The ledger for reading (`status`, the archive), or None if nothing was ever sent
    from here: it creates nothing, not even the store."""
    from newsletter.storage.sqlite import SQLiteStore

    return SQLiteStore.existing_ledger(config.state_dir)


def waiting_sends(config: Config, issue: str | None = None) -> list[WaitingSend]:
    """The sends (of `issue`, or of all) whose process waits in the foreground now, soonest
    first; for reading (`status`, `cancel`): it creates nothing."""
    from newsletter.storage.sqlite import SQLiteStore

    return SQLiteStore.waiting_sends(config.state_dir, issue)


def still_waiting(config: Config, send: WaitingSend) -> bool:
    """Whether the process of `send` still waits: while it does, its PID is its own."""
    from newsletter.storage.sqlite import SQLiteStore

    return SQLiteStore.still_waiting(config.state_dir, send)
