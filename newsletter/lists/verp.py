"""A return path per recipient (VERP), so a bounce names its recipient and issue by itself.

With `bounces.verp: true`, an SMTP send's envelope sender for ada@example.com in issue
2025-08-01-north-korea is

    bounces+k5vq3xw2m4ab7cde-2025-08-01-north-korea@news.example.org

The MTA that gives up sends its report to that address, whatever the report says or hides.
A local part holds at most 64 octets, too few for a long address, so the token carries the
issue (cut to fit) and 80 bits of an HMAC over the list, issue and address under
`NEWSLETTER_SECRET`, in lowercase base32 (MTAs that fold case cannot break it). It is read
back against the ledger: the one recipient of that issue whose MAC matches. Nobody can make
a token that suppresses an address they choose.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

from newsletter.config import Config
from newsletter.errors import ConfigError
from newsletter.lists.addresses import address_key
from newsletter.lists.tokens import SECRET_ENV, purpose_mac
from newsletter.storage.store import existing_ledger

PURPOSE = "verp"
_MAC_BYTES = 10  # 16 base32 characters
_MAC_CHARS = 16
_LOCAL_MAX = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def return_address(config: Config) -> str:
    """The bounce mailbox: `bounces.address`, else the from address."""
    return config.settings.bounces.address or config.settings.from_.email


def _secret(config: Config) -> str:
    secret = config.env.get(SECRET_ENV, "")
    if len(secret) < 16:
        raise ConfigError(
            f"bounces.verp is on, so {SECRET_ENV} must be set (16 characters at least) to "
            "sign each return path; set it, or turn bounces.verp off"
        )
    return secret


def _mac(secret: str, list_id: str, issue_id: str, email: str) -> str:
    digest = purpose_mac(secret, PURPOSE, list_id, issue_id, address_key(email), size=_MAC_BYTES)
    return base64.b32encode(digest).decode("ascii").lower()


def _hint(issue_id: str, room: int) -> str:
    return _UNSAFE.sub("-", issue_id)[: max(room, 0)].strip("-")


def envelope_sender(config: Config, recipient_email: str, issue_id: str) -> str:
    """The MAIL FROM for one recipient of one issue: the plain return address, or with
    `bounces.verp` its signed per-recipient form."""
    base = return_address(config)
    if not config.settings.bounces.verp:
        return base
    local, _, domain = base.rpartition("@")
    mac = _mac(_secret(config), config.list_id, issue_id, recipient_email)
    head = f"{local}+{mac}"
    hint = _hint(issue_id, _LOCAL_MAX - len(head) - 1)
    return f"{head}-{hint}@{domain}" if hint else f"{head}@{domain}"


class VerpResolver:
    """Reads signed return paths back to (recipient, issue) against the ledger's recipients.

    Each issue's MACs are computed once per run, on first need.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        local, _, domain = return_address(config).rpartition("@")
        self._pattern = re.compile(
            rf"^{re.escape(local)}\+([a-z2-7]{{{_MAC_CHARS}}})(?:-([A-Za-z0-9_-]*))?@"
            rf"{re.escape(domain)}$",
            re.IGNORECASE,
        )
        self._issues: list[str] | None = None
        self._macs: dict[str, dict[str, str]] = {}

    def resolve(self, addresses: Iterable[str]) -> tuple[str, str] | None:
        """The (recipient, issue) the first signed return path among `addresses` names."""
        for address in addresses:
            match = self._pattern.match(address.strip().strip("<>"))
            if match is None:
                continue
            mac, hint = match.group(1).lower(), (match.group(2) or "").lower()
            for issue in self._candidates(hint):
                email = self._macs_of(issue).get(mac)
                if email is not None:
                    return email, issue
        return None

    def _candidates(self, hint: str) -> list[str]:
        if self._issues is None:
            self._issues = _ledger_issues(self.config)
        room = _LOCAL_MAX  # the hint was cut to fit; compare on its length
        return [i for i in self._issues if _hint(i, room).lower().startswith(hint) or hint == ""]

    def _macs_of(self, issue: str) -> dict[str, str]:
        if issue not in self._macs:
            secret = _secret(self.config)
            list_id = self.config.list_id
            ledger = existing_ledger(self.config)
            if ledger is None:
                return {}
            with ledger:
                self._macs[issue] = {
                    _mac(secret, list_id, issue, d.email): d.email for d in ledger.deliveries(issue)
                }
        return self._macs[issue]


def _ledger_issues(config: Config) -> list[str]:
    ledger = existing_ledger(config)
    if ledger is None:
        return []
    with ledger:
        return sorted({s.issue for s in ledger.sends()}, reverse=True)
