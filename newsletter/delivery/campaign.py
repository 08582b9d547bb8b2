"""One issue on its way to one list: everything that is worked out once per send."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from newsletter.config import Config, secrets
from newsletter.content.issue import Issue, load_issue
from newsletter.content.personalise import BUILTIN_FIELDS
from newsletter.content.render import Rendered, render_issue
from newsletter.delivery.message import Headers, MessageBuilder, Recipient, headers_for, recipient
from newsletter.delivery.providers.base import CampaignView
from newsletter.lists.tokens import Signer, signer_from_env


@dataclass
class Campaign:
    """One issue, rendered and inlined once, on its way to one list.

    Everything here is the same for every recipient: the config, the rendered parts with
    their slots, the signer for unsubscribe tokens and the headers. Per recipient, only
    `recipient()` (the fields and token) and the builder's fill-in are left to do.
    Providers are given its `view`, not the campaign.
    """

    config: Config
    issue_path: Path
    issue: Issue
    rendered: Rendered
    signer: Signer
    templates: Path | None = None
    test: bool = False
    headers: Headers = field(init=False)

    def __post_init__(self) -> None:
        self.headers = headers_for(self.config)

    @cached_property
    def builder(self) -> MessageBuilder:
        return MessageBuilder(self.rendered, self.headers, test=self.test)

    @cached_property
    def view(self) -> CampaignView:
        """What a provider is given of this campaign: the mail, not the config or the list."""
        return CampaignView(
            issue_id=self.issue.id,
            subject=self.subject,
            headers=self.headers,
            rendered=self.rendered,
            builder=self.builder,
            secrets=secrets(self.config),
        )

    @property
    def subject(self) -> str:
        return ("[TEST] " if self.test else "") + self.rendered.subject

    def recipient(
        self, email: str, name: str, fields: Mapping[str, str] | None = None
    ) -> Recipient:
        return recipient(self.config, self.signer, email, name, fields)

    def missing_fields(self, columns: list[str]) -> list[str]:
        """Slots the templates use that neither we nor the list's columns can fill."""
        known = {*BUILTIN_FIELDS, "token", *columns}
        return sorted(f for f in self.rendered.slots.fields() if f not in known)


def prepare(
    config: Config,
    issue_path: Path,
    *,
    templates: Path | None = None,
    allow_local_secret: bool,
    test: bool = False,
) -> Campaign:
    """Load, render and inline the issue once; settle the signer for unsubscribe links."""
    issue = load_issue(issue_path)
    rendered = render_issue(issue, config, templates)
    signer = signer_from_env(config.env, config.list_id, allow_local=allow_local_secret)
    return Campaign(config, issue_path, issue, rendered, signer, templates, test)
