"""Purpose-bound tokens for the reader service: each works for its own purpose only."""

from __future__ import annotations

import pytest

from newsletter.lists.tokens import PurposeSigner, Signer, TokenError

SECRET = "s3cr3t-token-key-for-tests-0123456789"
LIST = "weekly.example.org"


def test_a_token_gives_back_its_payload_until_it_expires() -> None:
    confirm = PurposeSigner(SECRET, LIST, "confirm")
    token = confirm.token("nonce-1", expires=1000)
    assert confirm.verify(token, now=999) == "nonce-1"
    with pytest.raises(TokenError, match="expired"):
        confirm.verify(token, now=1001)


def test_no_token_works_for_another_purpose_list_or_secret() -> None:
    confirm = PurposeSigner(SECRET, LIST, "confirm")
    csrf = PurposeSigner(SECRET, LIST, "csrf")
    token = confirm.token("ada@example.org", expires=2**40)
    for other in (csrf, PurposeSigner(SECRET, "other.example.org", "confirm")):
        with pytest.raises(TokenError):
            other.verify(token, now=0)
    with pytest.raises(TokenError):
        PurposeSigner("another-secret-0123456789", LIST, "confirm").verify(token, now=0)
    # Unsubscribe tokens (the Signer's, in mail already sent) and these never cross.
    with pytest.raises(TokenError):
        Signer(SECRET, LIST).verify(token)
    with pytest.raises(TokenError):
        confirm.verify(Signer(SECRET, LIST).token("ada@example.org"), now=0)


def test_changed_or_truncated_tokens_are_refused() -> None:
    confirm = PurposeSigner(SECRET, LIST, "confirm")
    token = confirm.token("nonce", expires=2**40)
    head, _, tail = token.partition(".")
    for bad in (token[:-1], head, f"{head}.", token + "A", f"{head[:-1]}x.{tail}", ""):
        with pytest.raises(TokenError):
            confirm.verify(bad, now=0)


def test_an_unknown_purpose_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="purpose"):
        PurposeSigner(SECRET, LIST, "unsubscribe")
