"""Readers' unsubscribe requests, turned into entries on the suppression list.

A reader unsubscribes by the link in the footer or the List-Unsubscribe header: either the
https page, which is the website's job (`Signer.verify` checks its token), or a mail to the
unsubscribe address whose subject is "unsubscribe <token>". The editor hands
`newsletter unsubscribe` whatever they have (the token, the link, or the subject line);
each token is checked, and the address it was made for goes on the suppression list,
which every send honours.

Only `NEWSLETTER_SECRET` is believed: outbox and dry-run mail is signed with a constant
that is in the source, so anyone could make a token of it for anyone's address. And a
token is data from outside even when its MAC holds: what it carries goes on the list only
if it is an address.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field

from newsletter.config import Config
from newsletter.errors import ConfigError, TokenError
from newsletter.lists.addresses import address_key, validate_address
from newsletter.lists.tokens import SECRET_ENV, Signer
from newsletter.storage.store import Store, Suppression

REASON = "unsubscribe request"


@dataclass
class Unsubscribed:
    """What came of a set of requests: nothing given is dropped without a word."""

    addresses: list[str] = field(default_factory=list)  # every address a valid token named
    added: int = 0  # of those, new on the suppression list
    refused: list[tuple[str, str]] = field(default_factory=list)  # (as given, why)

    @property
    def already(self) -> int:
        return len(self.addresses) - self.added


_IN_LINK = re.compile(r"[?&]token=([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")


def token_in(text: str) -> str:
    """The token in a link (`...?token=T`, maybe in <>, or the whole List-Unsubscribe
    header), a mail subject (`unsubscribe T`), or on its own.

    Subjects arrive as a mail client shows them ("Re: unsubscribe T") or as the mailto
    link has them (`subject=unsubscribe%20T`); either way the token is the last word.
    """
    text = urllib.parse.unquote(text.strip())
    found = _IN_LINK.search(text)
    if found:
        return found[1]
    words = text.split()
    return words[-1].strip("<>\"'()[],;") if words else ""


def _plain_address(request: str) -> str | None:
    """The address itself, when the editor gives one: they need no token to unsubscribe it."""
    text = request.strip()
    if "@" not in text or "?" in text or " " in text:
        return None
    try:
        return validate_address(text)
    except ValueError:
        return None


def _signer(config: Config) -> Signer:
    secret = config.env.get(SECRET_ENV, "")
    signer = Signer(secret, config.list_id) if secret else None
    if signer is None or signer.local:
        raise ConfigError(
            f"{SECRET_ENV} is not set{'' if signer is None else ' to a real secret'}: "
            "unsubscribe tokens are checked with the secret your real sends sign them with, "
            "so set it to that value. (Tokens in outbox and dry-run mail are signed with a "
            "constant anyone can read in the source: they unsubscribe nobody.) A plain "
            "address needs no secret."
        )
    return signer


def unsubscribe(config: Config, requests: Iterable[str], store: Store) -> Unsubscribed:
    """Check each request's token; suppress the addresses of the valid ones in `store`.

    A plain address is taken as it is: the editor giving it needs no token. Tokens are
    checked with `NEWSLETTER_SECRET` only; `ConfigError` if a token comes and it is not set.
    """
    signer: Signer | None = None
    result = Unsubscribed()
    seen: set[str] = set()
    for request in requests:
        if not request.strip():
            continue
        address = _plain_address(request)
        if address is None:
            signer = signer or _signer(config)
            try:
                address = validate_address(signer.verify(token_in(request)))
            except TokenError as exc:
                result.refused.append((request.strip(), str(exc)))
                continue
            except ValueError as exc:
                reason = f"this token is signed, but what it carries is not a valid address ({exc})"
                result.refused.append((request.strip(), reason))
                continue
        if address_key(address) not in seen:
            seen.add(address_key(address))
            result.addresses.append(address)
    if result.addresses:
        result.added = store.suppress(
            Suppression(a, REASON, "unsubscribe", "cli") for a in result.addresses
        )
    return result
