"""The local outbox: every message as a file in a Maildir that any mail client opens.

The default provider when nothing is configured, so the whole flow runs with no account.
`mailbox.Maildir` writes each message under tmp/ and renames it into new/, so a reader
never sees half a message.
"""

from __future__ import annotations

import mailbox
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.delivery.providers.base import CampaignView, ProviderSpec, Sent
from newsletter.errors import PermanentProviderError

if TYPE_CHECKING:
    from newsletter.config import Config
    from newsletter.delivery.message import Recipient


class Outbox:
    name = "outbox"
    batch_size = 1
    concurrency = 1

    def __init__(self, campaign: CampaignView, path: Path) -> None:
        self.path = path
        self.builder = campaign.builder
        try:
            self.box = mailbox.Maildir(self.path, factory=None, create=True)
        except OSError as exc:
            raise PermanentProviderError(
                f"cannot open the outbox {self.path}: {exc.strerror}; fix `outbox:` in "
                "newsletter.yaml or the folder's permissions"
            ) from None

    def send(self, batch: Sequence[Recipient]) -> Sent:
        keys = []
        for recipient in batch:
            try:
                keys.append(self.box.add(self.builder.build(recipient)))
            except OSError as exc:
                raise PermanentProviderError(
                    f"cannot write to the outbox {self.path}: {exc.strerror}"
                ) from None
        return Sent(provider_id=",".join(keys))

    def close(self) -> None:
        self.box.close()


def _folder(config: Config) -> Path:
    """Always ready: the folder is made on the first send (`outbox:` in newsletter.yaml)."""
    return config.outbox_dir


PROVIDER = ProviderSpec(
    name="outbox",
    ready=_folder,
    open=lambda campaign, path, sandbox: Outbox(campaign, path),
    local=True,
    deliver_one=lambda path, message, secrets: _deliver_one(path, message),
)


def _deliver_one(path: Path, message: EmailMessage) -> None:
    box = mailbox.Maildir(path, factory=None, create=True)
    try:
        box.add(message)
    finally:
        box.close()
