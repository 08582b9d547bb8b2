"""Messages built per subscriber parse back exactly as the stdlib would have built them."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter.config import Config, load_config
from newsletter.content.issue import load_issue
from newsletter.content.render import Rendered, render_issue
from newsletter.delivery.message import MessageBuilder, headers_for, recipient
from newsletter.errors import HeaderError
from newsletter.lists.tokens import LOCAL_SECRET, Signer
from tests.workspace import SAMPLE, make_workspace


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Config, Rendered, Signer]:
    ws = make_workspace(tmp_path / "ws")
    config = load_config(ws / "newsletter.yaml")
    return config, render_issue(load_issue(ws / SAMPLE), config), Signer(LOCAL_SECRET, "list")


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@pytest.mark.parametrize(
    ("name", "display_name"),
    [
        ("Ann", "Ann"),
        ("Zoë Ünal-Łukasz, Jr.", "Zoë Ünal-Łukasz, Jr."),
        ('O"Brien <b>&', 'O"Brien <b>&'),
        ("王小明", "王小明"),
        ("", ""),
        ("x" * 300, "x" * 300),
        ("  spaced  out  ", "spaced out"),  # a header's runs of white space are one space
    ],
)
def test_parts_decode_to_the_personalised_text(
    setup: tuple[Config, Rendered, Signer], name: str, display_name: str
) -> None:
    config, rendered, signer = setup
    reader = recipient(config, signer, "reader@example.com", name, {"city": "Oslo"})
    message = parse(MessageBuilder(rendered, headers_for(config)).build(reader))
    html, text = rendered.personalise(reader.fields)
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert all(p["Content-Transfer-Encoding"] == "quoted-printable" for p in parts)
    assert parts[0].get_content() == text
    assert parts[1].get_content() == html
    assert message["To"].addresses[0].display_name == display_name
    assert message["To"].addresses[0].addr_spec == "reader@example.com"


def _dot_stuffed(message: bytes) -> bytes:
    """What SMTP's DATA must carry, done the slow way over the whole message."""
    return re.sub(rb"(?m)^\.", b"..", message.replace(b"\n", b"\r\n"))


@pytest.mark.parametrize("name", ["Ann", ".Dot", ".", "." + "x" * 90, "Zoë ."])
def test_the_wire_form_doubles_every_leading_dot_and_ends_lines_in_crlf(
    tmp_path: Path, name: str
) -> None:
    ws = make_workspace(tmp_path / "ws")
    issue = ws / SAMPLE
    # An intro that begins with a dot: the text part has a line that starts with one.
    issue.write_text(
        issue.read_text(encoding="utf-8").replace("intro: |\n  Ten", "intro: |\n  .NET aside, ten"),
        encoding="utf-8",
    )
    config = load_config(ws / "newsletter.yaml")
    rendered = render_issue(load_issue(issue), config)
    reader = recipient(config, Signer(LOCAL_SECRET, "list"), "reader@example.com", name, {})
    builder = MessageBuilder(rendered, headers_for(config))
    when = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    plain = builder.build(reader, message_id="<a@example.org>", now=when)
    wire = builder.build_wire(reader, message_id="<a@example.org>", now=when)
    assert b"\n.NET" in plain  # the case this test is about is really there
    assert wire == _dot_stuffed(plain)
    assert b"\r\n..NET" in wire
    assert b"\n" not in wire.replace(b"\r\n", b"")


def test_every_encoded_line_is_within_76_characters(setup: tuple[Config, Rendered, Signer]) -> None:
    config, rendered, signer = setup
    reader = recipient(config, signer, "reader@example.com", "Ünal " * 40)
    data = MessageBuilder(rendered, headers_for(config)).build(reader)
    body = data.split(b"\n\n", 1)[1]
    assert max(len(line) for line in body.split(b"\n")) <= 76
    assert data.isascii()


def test_headers_are_the_ones_we_meant(setup: tuple[Config, Rendered, Signer]) -> None:
    config, rendered, signer = setup
    reader = recipient(config, signer, "ann@example.com", "Ann")
    message = parse(MessageBuilder(rendered, headers_for(config)).build(reader))
    assert message["From"] == "The Weekly Brief <brief@example.org>"
    assert message["Reply-To"] == "editor@example.org"
    assert message["Subject"] == rendered.subject
    assert message["List-Id"] == "The Weekly Brief <the-weekly-brief.example.org>"
    token = signer.token("ann@example.com")
    unsubscribe = message["List-Unsubscribe"]
    assert f"<https://brief.example.org/unsubscribe?token={token}>" in unsubscribe
    assert f"<mailto:unsubscribe@example.org?subject=unsubscribe%20{token}>" in unsubscribe
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"].endswith("@example.org>")
    assert message["Date"].datetime is not None
    names = [k for k, _ in message.items()]
    assert len(names) == len(set(names)), "no header twice"


def test_without_an_https_url_there_is_no_one_click_header(tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path / "ws",
        config="""\
name: Plain List
from: {email: list@example.org}
postal_address: 1 Example Street
""",
    )
    config = load_config(ws / "newsletter.yaml")
    rendered = render_issue(load_issue(ws / SAMPLE), config)
    reader = recipient(config, Signer(LOCAL_SECRET, "l"), "ann@example.com", "Ann")
    message = parse(MessageBuilder(rendered, headers_for(config)).build(reader))
    assert message["List-Unsubscribe"].startswith("<mailto:list@example.org?subject=unsubscribe")
    assert message["List-Unsubscribe-Post"] is None


def test_test_copies_say_so_in_the_subject(setup: tuple[Config, Rendered, Signer]) -> None:
    config, rendered, signer = setup
    reader = recipient(config, signer, "editor@example.org", "Ed")
    message = parse(MessageBuilder(rendered, headers_for(config), test=True).build(reader))
    assert message["Subject"] == "[TEST] " + rendered.subject


def test_line_breaks_in_a_name_cannot_inject_headers(
    setup: tuple[Config, Rendered, Signer],
) -> None:
    config, rendered, signer = setup
    builder = MessageBuilder(rendered, headers_for(config))
    evil = recipient(config, signer, "ann@example.com", "Ann\r\nBcc: everyone@example.net")
    with pytest.raises(HeaderError, match="line break"):
        builder.build(evil)
