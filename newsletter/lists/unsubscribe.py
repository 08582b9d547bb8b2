"""Readers' unsubscribe requests, turned into entries on the suppression list.

A reader unsubscribes by the link in the footer or the List-Unsubscribe header: either the
https page, which is the website's job (`Signer.verify` checks its token), or a mail to the
unsubscribe address whose subject is "unsubscribe <token>". The editor hands
`newsletter unsubscribe` whatever they have (the token, the link, or the subject line);
each token is checked, and the address it was made for goes on the suppression list,
which every send honours.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field

from newsletter.config import Config
from newsletter.lists.addresses import validate_address
from newsletter.lists.tokens import SECRET_ENV, ForeignTokenError, TokenError, signer_from_env
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


def unsubscribe(config: Config, requests: Iterable[str], store: Store) -> Unsubscribed:
    """Check each request's token; suppress the addresses of the valid ones in `store`.

    Tokens are checked with `NEWSLETTER_SECRET`, or, if it is unset, with the marked local
    secret that outbox sends and dry runs sign with. A plain address is taken as it is.
    """
    signer = signer_from_env(config.env, config.list_id, allow_local=True)
    result = Unsubscribed()
    seen: set[str] = set()
    for request in requests:
        if not request.strip():
            continue
        try:
            address = _plain_address(request) or signer.verify(token_in(request))
        except TokenError as exc:
            reason = str(exc)
            if signer.local and isinstance(exc, ForeignTokenError):
                reason += f" ({SECRET_ENV} is not set: tokens in real mail need it to be checked)"
            result.refused.append((request.strip(), reason))
            continue
        if address.casefold() not in seen:
            seen.add(address.casefold())
            result.addresses.append(address)
    if result.addresses:
        result.added = store.suppress(
            Suppression(a, REASON, "unsubscribe", "cli") for a in result.addresses
        )
    return result
