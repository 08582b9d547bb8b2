"""Signed unsubscribe tokens: a link in one reader's mail works for that reader only.

A token is `<address>.<mac>` in URL-safe base64, the MAC an HMAC-SHA256 over the list id
and the address under `NEWSLETTER_SECRET`. It needs no database to check, cannot be moved
to another address or list, and is compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from newsletter.errors import ConfigError, ForeignTokenError, TokenError

SECRET_ENV = "NEWSLETTER_SECRET"
#: Used when no secret is set, for the outbox and dry-runs only; never for real mail, and
#: never believed by `newsletter unsubscribe` (it is in the source: anyone can sign with it).
LOCAL_SECRET = "local-outbox-and-dry-run-only"
_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    """URL-safe base64 without padding (binascii directly: this runs once per subscriber)."""
    text = binascii.b2a_base64(data, newline=False).decode("ascii")
    return text.replace("+", "-").replace("/", "_").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Makes and checks tokens for one list under one secret."""

    def __init__(self, secret: str, list_id: str) -> None:
        if len(secret) < 16:
            raise ConfigError(f"{SECRET_ENV} is too short; use at least 16 random characters")
        key = hmac.new(secret.encode(), list_id.encode(), hashlib.sha256).digest()
        # HMAC as RFC 2104 spells it, with the keyed pads hashed once: hmac.digest lets go
        # of the GIL on every call and then waits to get it back, once per subscriber.
        block = key.ljust(hashlib.sha256().block_size, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self.local = secret == LOCAL_SECRET

    def _mac(self, address: str) -> bytes:
        # the address exactly as sent: a token changed in any way, even in case, is refused
        inner = self._inner.copy()
        inner.update(address.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:_MAC_BYTES]

    def token(self, address: str) -> str:
        return f"{_b64(address.encode())}.{_b64(self._mac(address))}"

    def verify(self, token: str) -> str:
        """The address a token was made for; `TokenError` if it was not made by us for this list."""
        head, dot, tail = token.strip().partition(".")
        try:
            raw = _unb64(head)
            address = raw.decode("utf-8")
            mac = _unb64(tail)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise TokenError("this unsubscribe token is malformed") from None
        # base64 decoding skips stray characters and ignores spare bits: only the one
        # spelling we make is a token, so a changed token is never still "valid"
        if _b64(raw) != head or _b64(mac) != tail:
            raise TokenError("this unsubscribe token is malformed")
        if not dot or not address or not hmac.compare_digest(mac, self._mac(address)):
            raise ForeignTokenError("this unsubscribe token is not valid for this list")
        return address

    def url(self, base: str, address: str) -> str:
        return link(base, self.token(address))


def link(base: str, token: str) -> str:
    """The unsubscribe page's URL for a token; tokens are URL-safe, so nothing is quoted."""
    return f"{base}{'&' if '?' in base else '?'}token={token}"


def purpose_mac(secret: str, purpose: str, *parts: str, size: int = _MAC_BYTES) -> bytes:
    """A MAC over `parts` under a key bound to `purpose`: what one use signs (a return
    path, say) is never valid as another (an unsubscribe token)."""
    key = hmac.new(secret.encode(), f"newsletter/{purpose}".encode(), hashlib.sha256).digest()
    return hmac.new(key, "\0".join(parts).encode(), hashlib.sha256).digest()[:size]


def signer_from_env(env: Mapping[str, str] | None, list_id: str, *, allow_local: bool) -> Signer:
    """The signer for a send: real sends need the secret; the outbox may use a marked local one."""
    secret = (env or {}).get(SECRET_ENV, "")
    if not secret:
        if not allow_local:
            raise ConfigError(
                f"{SECRET_ENV} is not set; unsubscribe links must be signed for real mail. "
                "Set it to a long random value, e.g. "
                f"`export {SECRET_ENV}=$(openssl rand -hex 32)`, and keep it the same across sends"
            )
        secret = LOCAL_SECRET
    return Signer(secret, list_id)


# --- tokens for the reader service: each bound to one purpose -------------------------------

#: What a `PurposeSigner` token may be for. Unsubscribe links keep the `Signer` tokens above,
#: which mail already sent carries; their key differs from every key here.
PURPOSES = ("confirm", "csrf")


class PurposeSigner:
    """Tokens for one purpose of one list, with an expiry: `<payload>.<mac>`, URL-safe.

    The key is HMAC(secret, "<purpose>\\0<list id>") and the signed text starts with the
    purpose and the expiry, so a confirm link is never a CSRF token or an unsubscribe link,
    nor the other way round, and a changed expiry breaks the MAC.
    """

    def __init__(self, secret: str, list_id: str, purpose: str) -> None:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        if len(secret) < 16:
            raise ConfigError(f"{SECRET_ENV} is too short; use at least 16 random characters")
        self.purpose = purpose
        self._key = hmac.new(secret.encode(), f"{purpose}\0{list_id}".encode(), hashlib.sha256)

    def _mac(self, body: bytes) -> bytes:
        mac = self._key.copy()
        mac.update(body)
        return mac.digest()[:_MAC_BYTES]

    def token(self, payload: str, *, expires: int) -> str:
        """A token for `payload`, valid until the Unix time `expires`."""
        body = f"{self.purpose}\0{expires}\0{payload}".encode()
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def verify(self, token: str, *, now: float) -> str:
        """The payload; `TokenError` if forged, truncated, for another purpose or expired."""
        head, dot, tail = token.strip().partition(".")
        try:
            body = _unb64(head)
            mac = _unb64(tail)
        except (binascii.Error, ValueError):
            raise TokenError(f"this {self.purpose} token is malformed") from None
        if not dot or _b64(body) != head or _b64(mac) != tail:
            raise TokenError(f"this {self.purpose} token is malformed")
        if not hmac.compare_digest(mac, self._mac(body)):
            raise ForeignTokenError(f"this {self.purpose} token is not valid for this list")
        purpose, _, rest = body.partition(b"\0")
        expires, _, payload = rest.partition(b"\0")
        if purpose.decode() != self.purpose or not expires.isdigit():
            raise ForeignTokenError(f"this token is not a {self.purpose} token")
        if int(expires) < now:
            raise TokenError(f"this {self.purpose} link has expired")
        return payload.decode("utf-8")
