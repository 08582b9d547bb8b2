"""Where mail goes: one small interface, one module per provider, registered here by name.

A provider takes a batch of recipients of one campaign and either returns a `Sent` (the
batch was accepted, maybe minus some refused recipients) or raises one of
`TransientProviderError` (nothing was accepted; worth retrying), `UnknownOutcomeError`
(the request left but no answer came) or `PermanentProviderError` (stop and fix
something). Retrying, backing off and recording are the send loop's job, not theirs.

Each provider module declares a `PROVIDER = ProviderSpec(...)` (see `base`): its section of
newsletter.yaml, its secrets, its readiness check and its batch size. Adding one (Amazon
SES, Postmark) is a new module and one line in `_MODULES`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from newsletter.delivery.providers.base import (
    CampaignView,
    Provider,
    ProviderSpec,
    Refusal,
    Scheduled,
    Sent,
)

if TYPE_CHECKING:
    from newsletter.delivery.campaign import Campaign

__all__ = [
    "PROVIDERS",
    "CampaignView",
    "Provider",
    "ProviderSpec",
    "Scheduled",
    "Sent",
    "open_provider",
]

#: The registered providers, in the order `--provider` lists them.
_MODULES = (
    "newsletter.delivery.providers.outbox",
    "newsletter.delivery.providers.smtp",
    "newsletter.delivery.providers.sendgrid",
)


def _register(modules: tuple[str, ...]) -> dict[str, ProviderSpec[Any]]:
    specs: dict[str, ProviderSpec[Any]] = {}
    for module in modules:
        spec = getattr(importlib.import_module(module), "PROVIDER", None)
        if not isinstance(spec, ProviderSpec):
            raise TypeError(f"{module} declares no PROVIDER = ProviderSpec(...)")
        specs[spec.name] = spec
    return specs


#: Every provider by the name `--provider` and `provider:` take.
PROVIDERS: Mapping[str, ProviderSpec[Any]] = _register(_MODULES)


def secret_names() -> tuple[str, ...]:
    """The environment variables that hold any provider's secrets."""
    return tuple(name for spec in PROVIDERS.values() for name in spec.secret_names)


def address_refusal(name: str) -> Refusal | None:
    """What the provider `name` cannot take, as far as is known before connecting. (Whether
    an SMTP server takes a non-ASCII local part is known only once it answers EHLO.)"""
    return PROVIDERS[name].refusal


def open_provider(
    name: str, campaign: Campaign, *, sandbox: bool = False, schedule: Scheduled | None = None
) -> Provider:
    """The provider `name`, made ready from the config and environment, for this campaign:
    it is given the campaign's `view`, not the campaign (with `schedule`, a held send's)."""
    spec = PROVIDERS[name]
    view = (
        campaign.view if schedule is None else dataclasses.replace(campaign.view, schedule=schedule)
    )
    return spec.open(view, spec.ready(campaign.config), sandbox)
