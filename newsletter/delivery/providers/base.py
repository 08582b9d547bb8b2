"""What every provider is, and what it is given: the seam between the send and a provider.

A provider module declares one `ProviderSpec` (its settings, its secrets, its readiness
check, its batch size) and `providers/__init__.py` registers it by name. The send loop
asks the spec, never the provider's name, so a new provider touches nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from newsletter.errors import ProviderError

if TYPE_CHECKING:
    from email.message import EmailMessage

    from newsletter.config import Config
    from newsletter.content.render import Rendered
    from newsletter.delivery.message import Headers, MessageBuilder, Recipient

A = TypeVar("A")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Sent:
    """The provider took the batch: its id for it, and any recipient it refused for good."""

    provider_id: str | None
    rejected: Mapping[str, str] = field(default_factory=dict)  # key -> reason
    #: Of the rejected keys, those whose mailbox will never take mail: they are suppressed.
    hard_bounces: frozenset[str] = frozenset()
    #: A batch of several messages (SMTP) has an outcome per message. The provider's id per
    #: accepted key, where each has its own (then `provider_id` is unused for those).
    provider_ids: Mapping[str, str] = field(default_factory=dict)
    #: Keys whose message left but whose answer never came (key -> why): never resent blindly.
    unknown: Mapping[str, str] = field(default_factory=dict)
    #: Keys not delivered because the batch stopped early (key -> why): sent again, and
    #: `error` says why it stopped (a TransientProviderError is worth retrying them).
    unsent: Mapping[str, str] = field(default_factory=dict)
    error: ProviderError | None = None


class Marks(Protocol):
    """The ledger's marks for one message at a time, for a provider whose batch is a series
    of messages (SMTP): pending (fsynced) before it leaves, sent as soon as it is accepted."""

    def pending(self, recipient: Recipient) -> None: ...

    def sent(self, key: str, provider_id: str) -> None: ...


class Provider(Protocol):
    name: str
    #: Recipients per request: SendGrid takes up to 1000; SMTP a few messages down one
    #: connection; the outbox one message.
    batch_size: int
    #: Requests that may be out at once, each from its own thread: several for SendGrid and
    #: SMTP (a connection each); one for the outbox.
    concurrency: int

    def send(self, batch: Sequence[Recipient]) -> Sent: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CampaignView:
    """What a provider sees of a campaign: the mail to send, and nothing of the list, the
    ledger or the rest of the config (which a provider has no business reading)."""

    issue_id: str
    subject: str
    headers: Headers
    rendered: Rendered
    #: The whole MIME message per recipient, for providers that take one (outbox, SMTP).
    builder: MessageBuilder
    #: Every secret this process knows, to scrub from any text a provider passes on.
    secrets: list[str] = field(repr=False)
    #: A send the provider holds until a set time (`send --at`); None: deliver now.
    schedule: Scheduled | None = None


@dataclass(frozen=True)
class Scheduled:
    """Every request of a send held by the provider until `send_at` (unix seconds), under
    one `batch_id` through which it can be cancelled before then."""

    send_at: int
    batch_id: str


@dataclass(frozen=True)
class Scheduling(Generic[A]):
    """A provider that holds a send until a set time, cancellable before it (SendGrid)."""

    #: How far ahead it takes a time, in seconds (SendGrid: 72 hours).
    window: float
    #: How long before the time a cancellation is still sure to hold, in seconds
    #: (SendGrid: 10 minutes; later, the mail may go out all the same).
    cancel_margin: float
    #: A new batch id for one send's requests: (account, secrets to scrub) -> id.
    new_batch: Callable[[A, list[str]], str]
    #: Cancel everything under a batch id; one cancelled already is no error:
    #: (account, batch id, secrets to scrub).
    cancel: Callable[[A, str, list[str]], None]


#: Why a provider cannot take an address, or None if it can: asked of every row, before
#: sending and in the dry run, so such a reader is skipped with the reason, not a batch lost.
Refusal = Callable[[str], "str | None"]


def _one_at_a_time(config: Config) -> int:
    return 1


@dataclass(frozen=True)
class ProviderSpec(Generic[A]):
    """A provider as the rest of the package knows it; `A` is what `ready` settles (an account,
    a server, a folder) and `open` takes."""

    name: str
    #: Settles newsletter.yaml and the environment into what `open` needs, or raises a
    #: ConfigError saying what to set: the readiness check a dry run reports.
    ready: Callable[[Config], A]
    #: The provider for one send: (what it sees of the campaign, what `ready` gave, sandbox).
    open: Callable[[CampaignView, A, bool], Provider]
    #: Its section of newsletter.yaml, under its name (`sendgrid:`), if it has one.
    settings: type[BaseModel] | None = None
    #: Environment variables holding its secrets: scrubbed from every message and report.
    secret_names: tuple[str, ...] = ()
    #: Recipients per request, from the config, for a dry run's count of batches.
    batch_size: Callable[[Config], int] = _one_at_a_time
    #: Writes files on this machine and mails no one: a local token secret will do.
    local: bool = False
    #: Has a mode that validates every request and delivers nothing (`--sandbox`).
    sandbox: bool = False
    #: Addresses it cannot take, known before connecting (SendGrid: a non-ASCII local part).
    refusal: Refusal | None = None
    #: Its cap on messages (`rate_limit` in its section: "10/s", "50000/day"), if it has one.
    rate_limit: Callable[[Config], str | None] | None = None
    #: Spread a short list over every connection (batches of list / concurrency) rather
    #: than fill a few full batches: SMTP, whose batch is a series of messages.
    spread: bool = False
    #: Send one finished message outside any campaign (the reader service's confirmation
    #: mail): (account, message, secrets to scrub). None: this provider cannot.
    deliver_one: Callable[[A, EmailMessage, list[str]], None] | None = None
    #: Holds a send until a set time (`send --at`) and cancels it; None: it cannot, and
    #: `send --at` waits in the foreground instead.
    schedule: Scheduling[A] | None = None


def section(config: Config, name: str, model: type[M]) -> M:
    """The provider `name`'s own section of newsletter.yaml, as its settings model."""
    value: Any = getattr(config.settings, name, None)
    if not isinstance(value, model):
        raise TypeError(f"newsletter.yaml was not read with the {name!r} provider registered")
    return value
