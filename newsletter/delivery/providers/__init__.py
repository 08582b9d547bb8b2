"""Where mail goes: one small interface, one module per provider.

A provider takes a batch of recipients of one campaign and either returns a `Sent` (the
batch was accepted, maybe minus some refused recipients) or raises one of
`TransientProviderError` (nothing was accepted; worth retrying), `UnknownOutcomeError`
(the request left but no answer came) or `PermanentProviderError` (stop and fix
something). Retrying, backing off and recording are the send loop's job, not theirs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

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


class Provider(Protocol):
    name: str
    #: Recipients per request: SendGrid takes up to 1000; SMTP and the outbox one message each.
    batch_size: int
    #: Requests that may be out at once, each from its own thread: several for SendGrid (a
    #: connection each); one for SMTP (one connection) and the outbox.
    concurrency: int

    def send(self, batch: Sequence[Recipient]) -> Sent: ...

    def close(self) -> None: ...


#: Why a provider cannot take an address, or None if it can: asked of every row, before
#: sending and in the dry run, so such a reader is skipped with the reason, not a batch lost.
Refusal = Callable[[str], str | None]


def address_refusal(name: str) -> Refusal | None:
    """What the provider `name` cannot take, as far as is known before connecting. (Whether
    an SMTP server takes a non-ASCII local part is known only once it answers EHLO.)"""
    if name == "sendgrid":
        from newsletter.delivery.providers.sendgrid import refusal

        return refusal
    return None


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
