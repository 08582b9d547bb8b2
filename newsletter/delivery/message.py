"""RFC 5322 messages for SMTP and the outbox, one per subscriber, without re-encoding the issue.

The standard `email` package builds the message's skeleton once per issue: the shared
headers (RFC 2047-encoded where needed) and the multipart/alternative structure with
quoted-printable parts. Building a whole `EmailMessage` per subscriber costs ~3 ms, far
too slow for a list, so each part is quoted-printable-encoded once, split at its slots,
and per subscriber only the short slot values are encoded and joined in. Every slot sits
between soft line breaks (`=` at the end of a line), which decode to nothing, so the
decoded part is exactly the personalised text and every encoded line stays within 76
characters.
"""

from __future__ import annotations

import binascii
import datetime as dt
import email.policy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import NamedTuple

from newsletter.config import Config
from newsletter.content.personalise import Filler, html_values, slot_values
from newsletter.content.render import Rendered
from newsletter.errors import HeaderError
from newsletter.lists.addresses import address_key
from newsletter.lists.tokens import Signer, link, signer_from_env

# "\n" line ends (smtplib turns them into CRLF on the wire). ASCII headers are folded only
# past 998 characters: the stdlib's folding at 78 moves a whole subject onto a continuation
# line, which some clients show with a leading space. Text that needs RFC 2047 encoding is
# folded at 78: the only way to keep each encoded-word within RFC 2047's 75 characters.
_POLICY = email.policy.default.clone(max_line_length=998)
_ENCODED_POLICY = email.policy.default.clone(max_line_length=78)
_QP_LINE = 76
_MARK_TEXT = "NLTEXTPARTMARK"
_MARK_HTML = "NLHTMLPARTMARK"


# RFC 5322's limit for a header line; an SMTP server refuses a message with a longer one.
_MAX_LINE = 998
# What formataddr quotes a display name for, and what it escapes inside the quotes.
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_ESCAPES = re.compile(r'[\\"]')
# What str.splitlines() breaks at: a client may too. Other control characters are refused.
_LINE_BREAK = re.compile("[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f]")


def check_header(name: str, value: str) -> str:
    if _LINE_BREAK.search(value):
        raise HeaderError(f"{name} contains a line break ({value!r}); headers must be one line")
    if _CONTROL.search(value):
        raise HeaderError(f"{name} contains a control character ({value!r}); remove it")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise HeaderError(f"{name} cannot be encoded as UTF-8 ({value!r})") from None
    return value


def _display_name(name: str, room: int = 80) -> str:
    """A display name as it goes before `<address>`: as is or quoted if it is ASCII and fits
    in `room` characters, else as RFC 2047 encoded-words folded into short lines."""
    if name.isascii() and "=?" not in name:
        shown = '"' + _ESCAPES.sub(r"\\\g<0>", name) + '"' if _SPECIALS.search(name) else name
        if len(shown) <= room:
            return shown
    return Header(name, "utf-8", maxlinelen=76, header_name="To").encode(linesep="\n")


def _subject_header(subject: str) -> bytes:
    """ASCII as it is, on one line; anything else as RFC 2047 encoded-words, folded.

    Not through `EmailMessage`: it would read an editor's `=?utf-8?q?...?=` as an encoded-word
    and send its decoding, where editor text is data.
    """
    if subject.isascii() and "=?" not in subject and len(subject) <= _MAX_LINE - 9:
        return b"Subject: " + subject.encode()
    encoded = Header(subject, "utf-8", maxlinelen=76, header_name="Subject").encode(linesep="\n")
    return b"Subject: " + encoded.encode("ascii")


class Recipient(NamedTuple):
    """One subscriber as a message needs them: the address and every slot's field.

    A NamedTuple rather than a frozen dataclass: one is made per subscriber, and a tuple
    is built in a third of the time.
    """

    key: str
    email: str
    name: str
    fields: dict[str, str]

    @property
    def unsubscribe_url(self) -> str:
        return self.fields.get("unsubscribe_url", "")


@dataclass(frozen=True)
class Headers:
    """What every copy of the issue shares."""

    from_email: str
    from_name: str | None
    subject: str
    list_id: str
    list_name: str
    reply_to: str | None = None
    unsubscribe_mailto: str | None = None


def _subject(token: str) -> str:
    """The mailto query asking to unsubscribe; tokens are URL-safe, so only the space is quoted."""
    return f"subject=unsubscribe%20{token}"


def list_unsubscribe(
    url: str | None, mailto: str | None, token: str, *, fold: bool = True
) -> str | None:
    """RFC 2369: an https URL for one-click (RFC 8058) and a mailto for mail clients."""
    parts = []
    if url and url.startswith("https://"):
        parts.append(f"<{url}>")
    if mailto:
        parts.append(f"<mailto:{mailto}?{_subject(token)}>")
    return (",\n " if fold else ", ").join(parts) or None


def _soft_end(encoded: bytes) -> bytes:
    """End a QP segment with a soft line break, keeping its last line within 76 characters."""
    head, nl, last = encoded.rpartition(b"\n")
    if len(last) + 1 > _QP_LINE:
        cut = _QP_LINE - 1
        # never split an "=XX" escape
        while cut > 0 and b"=" in last[max(0, cut - 2) : cut]:
            cut -= 1
        last = last[:cut] + b"=\n" + last[cut:]
    return head + nl + last + b"=\n"


def _qp(text: str) -> bytes:
    return _soft_end(binascii.b2a_qp(text.encode("utf-8"), istext=True))


def _wire(piece: bytes) -> bytes:
    """A piece of a message as SMTP's DATA carries it: CRLF line ends, and a dot doubled at
    the start of a line (RFC 5321, 4.5.2). The piece must begin at the start of a line.

    Every piece the builder joins begins and ends at a line's start (the QP segments end
    in a soft line break), so the issue's share is converted once and only the short
    per-subscriber pieces per message: converting a 40 KB message per subscriber cost a
    quarter of an SMTP send's CPU (a py-spy profile, docs/benchmarks.md).
    """
    piece = piece.replace(b"\n", b"\r\n").replace(b"\n.", b"\n..")
    return b"." + piece if piece.startswith(b".") else piece


def _plain(piece: bytes) -> bytes:
    return piece


class _EncodedPart:
    """One part's literals, quoted-printable-encoded once; slots are filled per message."""

    def __init__(self, filler: Filler) -> None:
        self.literals = [_qp(lit) for lit in filler.literals]
        self.wire_literals = [_wire(lit) for lit in self.literals]
        self.order = filler.slot_order

    def encode(self, values: Sequence[str], *, wire: bool = False) -> bytes:
        literals, form = (self.wire_literals, _wire) if wire else (self.literals, _plain)
        out = [literals[0]]
        for i, slot in enumerate(self.order, start=1):
            out.append(form(_qp(values[slot])))
            out.append(literals[i])
        return b"".join(out)


class MessageBuilder:
    """Builds the bytes of one subscriber's message; the issue's share is done in __init__."""

    def __init__(self, rendered: Rendered, headers: Headers, *, test: bool = False) -> None:
        self.rendered = rendered
        self.headers = headers
        subject = check_header(
            "Subject", ("[TEST] " if test else "") + (headers.subject or rendered.subject)
        )
        self.domain = headers.from_email.rpartition("@")[2]
        from_name = headers.from_name or ""
        plain = from_name.isascii() and headers.list_name.isascii()
        policy = _POLICY if plain else _ENCODED_POLICY
        msg = EmailMessage(policy=policy)
        msg["From"] = Address(
            display_name=check_header("From name", from_name),
            addr_spec=headers.from_email,
        )
        if headers.reply_to:
            msg["Reply-To"] = Address(addr_spec=headers.reply_to)
        msg["List-Id"] = f"{check_header('List name', headers.list_name)} <{headers.list_id}>"
        msg.set_content(_MARK_TEXT, charset="utf-8", cte="quoted-printable")
        msg.add_alternative(_MARK_HTML, subtype="html", charset="utf-8", cte="quoted-printable")
        skeleton = msg.as_bytes(policy=policy)
        first, rest = re.split(rb"\n" + _MARK_TEXT.encode() + rb"=?\n?", skeleton, maxsplit=1)
        middle, last = re.split(rb"\n" + _MARK_HTML.encode() + rb"=?\n?", rest, maxsplit=1)
        self._frame = (_subject_header(subject) + b"\n" + first + b"\n", middle + b"\n", last)
        head, middle, tail = self._frame
        self._wire_frame = (_wire(head), _wire(middle), _wire(tail))
        self._text = _EncodedPart(rendered.text_filler)
        self._html = _EncodedPart(rendered.html_filler)

    def message_id(self) -> str:
        return make_msgid(domain=self.domain)

    def build(
        self, recipient: Recipient, *, message_id: str | None = None, now: dt.datetime | None = None
    ) -> bytes:
        """The complete message for one recipient, with "\n" line ends (a file, a preview)."""
        return self._build(recipient, message_id, now, wire=False)

    def build_wire(
        self, recipient: Recipient, *, message_id: str | None = None, now: dt.datetime | None = None
    ) -> bytes:
        """The same message as SMTP's DATA carries it: CRLF line ends and leading dots
        doubled, without the final "." line; built from pieces converted once per issue."""
        return self._build(recipient, message_id, now, wire=True)

    def _build(
        self, recipient: Recipient, message_id: str | None, now: dt.datetime | None, *, wire: bool
    ) -> bytes:
        raw = slot_values(self.rendered.slots, recipient.fields)
        per_recipient = [
            b"To: " + self._to(recipient).encode("utf-8"),
            b"Date: " + format_datetime(now or dt.datetime.now(dt.UTC)).encode(),
            b"Message-ID: " + (message_id or self.message_id()).encode(),
        ]
        token = recipient.fields.get("token", "")
        unsubscribe = list_unsubscribe(
            recipient.unsubscribe_url, self.headers.unsubscribe_mailto, token
        )
        if unsubscribe:
            per_recipient.append(b"List-Unsubscribe: " + unsubscribe.encode())
            if "<https://" in unsubscribe:
                per_recipient.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        own = b"\n".join(per_recipient) + b"\n"
        head, middle, tail = self._wire_frame if wire else self._frame
        return b"".join(
            (
                _wire(own) if wire else own,
                head,
                self._text.encode(raw, wire=wire),
                middle,
                self._html.encode(html_values(raw), wire=wire),
                tail,
            )
        )

    def _to(self, recipient: Recipient) -> str:
        name = check_header("Name", recipient.name)
        address = check_header("Address", recipient.email)
        if not name:
            return address
        room = _MAX_LINE - len("To:  <>") - len(address.encode())
        return f"{_display_name(name, room)} <{address}>"


def headers_for(config: Config) -> Headers:
    s = config.settings
    return Headers(
        from_email=s.from_.email,
        from_name=s.from_.name or s.name,
        subject="",
        list_id=config.list_id,
        list_name=s.name,
        reply_to=s.reply_to,
        unsubscribe_mailto=config.unsubscribe_mailto,
    )


def sample_recipient(config: Config) -> Recipient:
    """A made-up reader for previews, `render` output and the preflight."""
    signer = signer_from_env(config.env, config.list_id, allow_local=True)
    return recipient(config, signer, "reader@example.com", "Reader")


def recipient(
    config: Config, signer: Signer, email: str, name: str, fields: Mapping[str, str] | None = None
) -> Recipient:
    """A subscriber's slot values: their columns, name, address and signed unsubscribe link."""
    token = signer.token(email)  # once: signing is the costliest step per subscriber
    base = config.unsubscribe_url
    url = link(base, token) if base else f"mailto:{config.unsubscribe_mailto}?{_subject(token)}"
    values = {
        **(fields or {}),
        "email": email,
        "name": name,
        "unsubscribe_url": url,
        "token": token,
    }
    return Recipient(address_key(email), email, name, values)
