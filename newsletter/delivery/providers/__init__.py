"""Where mail goes: one small interface, one module per provider.

A provider takes a batch of recipients of one campaign and either returns a `Sent` (the
batch was accepted, maybe minus some refused recipients) or raises one of
`TransientProviderError` (nothing was accepted; worth retrying), `UnknownOutcomeError`
(the request left but no answer came) or `PermanentProviderError` (stop and fix
something). Retrying, backing off and recording are the send loop's job, not theirs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from newsletter.errors import ProviderError

if TYPE_CHECKING:
    from newsletter.delivery.campaign import Campaign
    from newsletter.delivery.message import Recipient

NAMES = ("outbox", "smtp", "sendgrid")


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


def open_provider(name: str, campaign: Campaign, *, sandbox: bool = False) -> Provider:
    """The provider `name`, configured from the campaign's config and environment."""
    if name == "outbox":
        from newsletter.delivery.providers.outbox import Outbox

        return Outbox(campaign)
    if name == "smtp":
        from newsletter.delivery.providers.smtp import SMTPProvider

        return SMTPProvider(campaign)
    if name == "sendgrid":
        from newsletter.delivery.providers.sendgrid import SendGridProvider

        return SendGridProvider(campaign, sandbox=sandbox)
    raise ValueError(f"unknown provider {name!r}")
