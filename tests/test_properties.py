"""Property tests: whatever an editor or a subscriber list holds, nothing crashes.

Every field of an issue and every cell of a list gets arbitrary text (Unicode, right-to-left
marks, emoji, control characters, very long strings, HTML, Markdown and template syntax).
The result is either rendered safely (escaped, never run as a template, every subscriber's
value in its slot and nowhere else) or refused with a `NewsletterError` that names the file,
the line and the field. Issue files are written with `yaml.safe_dump`, so the text that
arrives is exactly the text generated. `NEWSLETTER_PROPERTY_SCALE=20` multiplies the examples.
"""

from __future__ import annotations

import csv
import dataclasses
import email
import email.policy
import html
import io
import os
import re
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from newsletter.config import Config, load_config
from newsletter.content.issue import Issue, load_issue
from newsletter.content.render import Rendered, render_issue
from newsletter.delivery.campaign import Campaign
from newsletter.delivery.message import MessageBuilder, headers_for, recipient
from newsletter.delivery.providers.sendgrid import (
    SendGridAccount,
    SendGridProvider,
    SendGridSettings,
)
from newsletter.errors import HeaderError, IssueError, SubscribersError
from newsletter.lists.addresses import validate_address
from newsletter.lists.subscribers import Skipped, Subscriber, read_subscribers
from newsletter.lists.tokens import Signer
from tests.servers.sendgrid import TEST_API_KEY, SendGridServer, expand
from tests.workspace import make_workspace

# NEWSLETTER_PROPERTY_SCALE=20 runs twenty times the examples, for a thorough look by hand.
SCALE = int(os.environ.get("NEWSLETTER_PROPERTY_SCALE", "1"))
SETTINGS = settings(
    max_examples=60 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# What an editor (or an attacker filling in a signup form) might type, beyond random text.
HOSTILE = [
    "{{ 'EVAL' ~ 'UATED' }}",
    "{% for x in 'ab' %}LOOP{{ x }}{% endfor %}",
    "{{ 7*7 }}",
    "{{ subscriber.email }}",
    "{{ unsubscribe_url }}",
    "{% raw %}",
    "{# comment #}",
    "${7*7}",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "&amp; &lt; &#x3C;",
    "[click](javascript:alert(1))",
    "[ok](https://example.org/a?b=1&c=2)",
    "![pic](https://example.org/p.png)",
    "<https://example.org/auto>",
    "**bold** _it_ `code`",
    "\u202eevil\u202c",
    "\u200f\u200e\u200b\ufeff",
    "שלום עולם",
    "مرحبا",
    "👩\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈",
    "\x00",
    "\x07\x1b[31m",
    "\r\n",
    "\n\n",
    "\u2028",
    "\x85",
    "=?utf-8?q?Bcc=3A_x?=",
    "nl0123456789abh0x nl0123456789abt1x",
    "Bcc: victim@example.net",
    "\\",
    "'\"",
    "---",
    "- ",
    "# ",
    "> ",
    "    ",
    "\t",
]
TEXT = st.lists(
    st.one_of(st.sampled_from(HOSTILE), st.text(max_size=20)), min_size=1, max_size=6
).map("".join)
LONG = st.builds(
    lambda chunk, n: chunk * n,
    st.sampled_from(["x", "é", "😀", "ab ", "\u202e"]),
    st.integers(1, 3000),
)
FIELD = st.one_of(TEXT, TEXT, TEXT, LONG)
URL = st.one_of(
    st.sampled_from(["https://example.org/story", "http://news.example.net/a?b=1&c=2"]),
    st.builds(lambda t: "https://example.org/" + t, TEXT),
    TEXT,
)
WRONG_TYPE = st.one_of(st.integers(), st.none(), st.booleans(), st.lists(TEXT, max_size=2))
IMAGE = st.fixed_dictionaries({"url": URL, "alt": FIELD})
ARTICLE = st.fixed_dictionaries(
    {"headline": FIELD, "summary": FIELD, "url": URL},
    optional={
        "source": FIELD,
        "link_text": st.one_of(FIELD, st.none()),
        "image": IMAGE,
        "extra": FIELD,
    },
)
SECTION = st.fixed_dictionaries(
    {"title": FIELD, "articles": st.lists(ARTICLE, min_size=1, max_size=2)},
    optional={"intro": FIELD},
)
ISSUE = st.fixed_dictionaries(
    {"title": st.one_of(FIELD, FIELD, FIELD, WRONG_TYPE), "date": st.just("2025-08-08")},
    optional={
        "subject": st.one_of(FIELD, WRONG_TYPE),
        "preheader": FIELD,
        "intro": FIELD,
        "articles": st.lists(ARTICLE, max_size=3),
        "sections": st.lists(SECTION, max_size=2),
    },
)

# The same, but mostly what the schema accepts, so that most examples get rendered.
_PRINTABLE = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))
_SAFE_SNIPPETS = [h for h in HOSTILE if not any(c in h for c in "\x00\x07\x1b\r\n\u2028\x85")]
LINE = (
    st.lists(
        st.one_of(st.sampled_from(_SAFE_SNIPPETS), st.text(_PRINTABLE, max_size=20)),
        min_size=1,
        max_size=5,
    )
    .map("".join)
    .map(lambda s: s if s.strip() else s + "x")
)
PARAGRAPHS = st.lists(LINE, min_size=1, max_size=3).map("\n\n".join)
SAFE_URL = st.builds(
    lambda t: "https://example.org/" + t,
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cf", "Co", "Cn", "Z"))),
)
SAFE_ARTICLE = st.fixed_dictionaries(
    {"headline": LINE, "summary": PARAGRAPHS, "url": SAFE_URL},
    optional={
        "source": LINE,
        "link_text": st.one_of(LINE, st.none()),  # null: the language's read_more
        "image": st.fixed_dictionaries({"url": SAFE_URL, "alt": LINE}),
    },
)
SAFE_ISSUE = st.fixed_dictionaries(
    {
        "title": LINE.filter(lambda s: len(s.strip()) <= 200),
        "articles": st.lists(SAFE_ARTICLE, min_size=1, max_size=3),
    },
    optional={
        "preheader": LINE,
        "intro": PARAGRAPHS,
        "sections": st.lists(
            st.fixed_dictionaries(
                {"title": LINE, "articles": st.lists(SAFE_ARTICLE, min_size=1, max_size=2)},
                optional={"intro": PARAGRAPHS},
            ),
            max_size=2,
        ),
    },
)
ARTICLE_OK = {"headline": "Story", "summary": "Text.", "url": "https://example.org/s"}

PROBE_EMAIL = "probe.reader-5e1f@example.com"
PROBE_NAME = "Probe Q. Reader"


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("properties") / "ws")


@pytest.fixture(scope="module")
def config(ws: Path) -> Config:
    return load_config(ws / "newsletter.yaml", env={})


@pytest.fixture(scope="module")
def sendgrid() -> Iterator[SendGridServer]:
    with SendGridServer(TEST_API_KEY) as server:
        yield server


def write_yaml(ws: Path, data: dict[str, Any]) -> Path:
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    if yaml.safe_load(text) != data:  # PyYAML writes a raw NEL (\x85), then reads a space
        text = yaml.safe_dump(data, allow_unicode=False, sort_keys=False)
    assert yaml.safe_load(text) == data, "the generated text must arrive as it was generated"
    path = ws / "issues" / "2025-08-08-generated.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def accepted(ws: Path, data: dict[str, Any]) -> tuple[Path, Issue]:
    """The issue written and loaded; examples the loader refuses are not this test's."""
    path = write_yaml(ws, data)
    try:
        return path, load_issue(path)
    except IssueError:
        assume(False)
        raise


def assert_located(exc: IssueError, path: Path) -> None:
    """Every problem names the file and a line in it, and reads as plain text."""
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert exc.problems
    for problem in exc.problems:
        assert problem.path == str(path)
        assert problem.line is not None and 1 <= problem.line <= max(lines, 1), problem
        assert problem.message
        str(problem).encode("utf-8")  # printable: no lone surrogates
    assert str(exc).count(str(path)) == len(exc.problems)


# --- the issue loader ---------------------------------------------------------------------


@SETTINGS
@given(data=ISSUE)
def test_any_issue_file_loads_or_names_file_line_and_field(ws: Path, data: dict[str, Any]) -> None:
    path = write_yaml(ws, data)
    try:
        issue = load_issue(path)
    except IssueError as exc:
        assert_located(exc, path)
        fields = [p.field for p in exc.problems]
        # a problem of the defaulted subject is the title's: never one the editor did not write
        if "subject" not in data:
            assert "subject" not in fields
        return
    assert isinstance(issue, Issue)
    assert issue.title == data["title"].strip()
    if "subject" not in data:
        assert issue.subject == issue.title


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs += [(tag, name, value or "") for name, value in attrs]


# What the templates and CommonMark (raw HTML off) can produce; editor text adds no other tag.
ALLOWED_TAGS = {
    *("html", "head", "meta", "title", "style", "body", "div", "span", "table", "tr", "td", "p"),
    *("h1", "h2", "h3", "h4", "h5", "h6", "a", "img", "br", "strong", "em", "code", "pre"),
    *("ul", "ol", "li", "blockquote", "hr"),
}


def parse_html(text: str) -> _Tags:
    parser = _Tags()
    parser.feed(text)
    parser.close()
    return parser


def personalised(config: Config, rendered: Rendered) -> tuple[str, str, bytes]:
    reader = recipient(
        config, Signer("property-test-secret-0123456789", "l"), PROBE_EMAIL, PROBE_NAME
    )
    html_part, text_part = rendered.personalise(reader.fields)
    return html_part, text_part, MessageBuilder(rendered, headers_for(config)).build(reader)


def probe_counts(html_part: str, text_part: str) -> tuple[int, ...]:
    return (
        html_part.count(PROBE_EMAIL),
        html_part.count(html.escape(PROBE_NAME)),
        text_part.count(PROBE_EMAIL),
        text_part.count(PROBE_NAME),
    )


@pytest.fixture(scope="module")
def baseline(ws: Path, config: Config) -> tuple[int, ...]:
    """How often the probe reader's own values appear in an ordinary issue."""
    path = write_yaml(
        ws,
        {
            "title": "Plain",
            "articles": [{"headline": "h", "summary": "s", "url": "https://example.org/"}],
        },
    )
    html_part, text_part, _ = personalised(config, render_issue(load_issue(path), config))
    return probe_counts(html_part, text_part)


@settings(SETTINGS, max_examples=40 * SCALE)
@given(data=st.one_of(SAFE_ISSUE, SAFE_ISSUE, SAFE_ISSUE, ISSUE))
def test_any_accepted_issue_renders_as_data_never_as_markup_or_template(
    ws: Path, config: Config, baseline: tuple[int, ...], data: dict[str, Any]
) -> None:
    _, issue = accepted(ws, data)
    rendered = render_issue(issue, config)
    html_part, text_part, message = personalised(config, rendered)
    for part in (html_part, text_part, rendered.subject):
        assert "EVALUATED" not in part and "LOOPa" not in part, "editor text ran as a template"
    # the reader's values sit in their slots only: an editor's {{ subscriber.email }} or a
    # slot-like word stays text, so the counts are those of any issue
    assert probe_counts(html_part, text_part) == baseline
    tags = parse_html(html_part)
    assert set(tags.tags) <= ALLOWED_TAGS, set(tags.tags) - ALLOWED_TAGS
    for tag, name, value in tags.attrs:
        assert not name.startswith("on"), (tag, name, value)
        if name in ("href", "src"):
            assert value.startswith(("https://", "http://", "mailto:")), (tag, name, value)
    # and the message carries exactly those parts, with the headers we meant
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    plain, rich = parsed.iter_parts()
    assert plain.get_content() == text_part
    assert rich.get_content() == html_part
    assert parsed["Subject"] == rendered.subject
    assert "Bcc" not in parsed and "Cc" not in parsed


@settings(SETTINGS, max_examples=15 * SCALE)
@given(data=SAFE_ISSUE)
def test_any_accepted_issue_makes_a_valid_sendgrid_payload(
    ws: Path, config: Config, sendgrid: SendGridServer, data: dict[str, Any]
) -> None:
    path, issue = accepted(ws, data)
    rendered = render_issue(issue, config)
    signer = Signer("property-test-secret-0123456789", "l")
    campaign = Campaign(config, path, issue, rendered, signer)
    reader = campaign.recipient(PROBE_EMAIL, PROBE_NAME)
    account = SendGridAccount(TEST_API_KEY, sendgrid.url, SendGridSettings())
    provider = SendGridProvider(campaign.view, account)
    try:
        sent = provider.send([reader])
    finally:
        provider.close()
    # what the server received, checked against SendGrid's spec, then expanded as it would
    (received,) = [a for a in sendgrid.accepted if a.message_id == sent.provider_id]
    (delivered,) = expand(received)
    html_part, text_part = rendered.personalise(reader.fields)
    assert delivered.contents == {"text/plain": text_part, "text/html": html_part}
    assert delivered.subject == rendered.subject


def test_slot_tokens_copied_from_an_earlier_render_stay_text(ws: Path, config: Config) -> None:
    """A slot is a random token per render: an editor who pastes one from yesterday's HTML
    gets it printed, not filled with each reader's address."""
    first = render_issue(
        load_issue(write_yaml(ws, {"title": "One", "articles": [ARTICLE_OK]})), config
    )
    tokens = re.findall(r"nl[0-9a-f]{12}[ht]\d+x", first.html + first.text)
    assert tokens
    pasted = " ".join(dict.fromkeys(tokens))
    again = render_issue(
        load_issue(
            write_yaml(ws, {"title": "Two", "articles": [{**ARTICLE_OK, "summary": pasted}]})
        ),
        config,
    )
    assert again.slots.nonce != first.slots.nonce
    html_part, text_part, _ = personalised(config, again)
    for token in dict.fromkeys(tokens):
        assert token in html_part and token in text_part


# --- the personalisation step -------------------------------------------------------------

VALUE = st.one_of(TEXT, LONG, st.just(""))


@pytest.fixture(scope="module")
def slots_render(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Rendered]:
    """An issue rendered with templates whose output around each slot is known exactly."""
    ws = make_workspace(tmp_path_factory.mktemp("slots") / "ws")
    templates = ws / "t"
    templates.mkdir()
    (templates / "email.txt").write_text(
        "NAME[{{ subscriber.name }}] CITY[{{ subscriber.get('city', 'nowhere') }}] "
        "MAIL[{{ subscriber.email }}]\n"
    )
    (templates / "email.html").write_text(
        "<p>NAME[{{ subscriber.name }}] CITY[{{ subscriber.get('city', 'nowhere') }}] "
        'MAIL[{{ subscriber.email }}] <a href="{{ unsubscribe_url }}">u</a></p>\n'
    )
    config = load_config(ws / "newsletter.yaml", env={})
    path = ws / "issues" / "2025-08-08-x.yaml"
    path.write_text(yaml.safe_dump({"title": "T", "articles": [ARTICLE_OK]}), encoding="utf-8")
    return config, render_issue(load_issue(path), config, templates)


@SETTINGS
@given(name=VALUE, city=VALUE, steal=st.booleans())
def test_subscriber_values_are_filled_once_escaped_in_html_and_never_rendered(
    slots_render: tuple[Config, Rendered], name: str, city: str, steal: bool
) -> None:
    _config, rendered = slots_render
    if steal:  # a value holding this very render's slot tokens is still just a value
        name += rendered.slots.token("email", "", "t") + rendered.slots.token("email", "", "h")
    fields = {"name": name, "city": city, "email": "ann@example.com"}
    html_part, text_part = rendered.personalise(fields)
    # the spec, in one pass over the rendered parts: each slot becomes its value, escaped in
    # the HTML part, and nothing in a value is ever looked at again
    values = {
        "name": name,
        "city": city or "nowhere",
        "email": "ann@example.com",
        "unsubscribe_url": "",
    }
    assert html_part == _filled(rendered, "h", {k: html.escape(v) for k, v in values.items()})
    assert text_part == _filled(rendered, "t", values)
    assert text_part == f"NAME[{name}] CITY[{city or 'nowhere'}] MAIL[ann@example.com]\n"


def _filled(rendered: Rendered, part: str, values: dict[str, str]) -> str:
    slots = rendered.slots.slots
    tokens = {rendered.slots.token(s.field, s.fallback, part): s.field for s in slots}
    pattern = re.compile("|".join(map(re.escape, tokens)))
    source = rendered.html if part == "h" else rendered.text
    return pattern.sub(lambda m: values[tokens[m.group()]], source)


# --- the subscriber reader ----------------------------------------------------------------

ADDRESS = st.one_of(
    st.sampled_from(
        [
            "ann@example.com",
            "ANN@Example.com",
            "bob@example.org",
            "zoë@exämple.de",
            "not-an-address",
            "a@b",
            "x@localhost",
            "",
            " carol@example.net ",
        ]
    ),
    st.emails(),
    TEXT,
)
CELL = st.one_of(TEXT, LONG, st.sampled_from(["", "subscribed", "unsubscribed", "weekly;asia"]))
ROW = st.tuples(ADDRESS, CELL, CELL, CELL)


def physical_lines(text: str) -> int:
    return sum(1 for _ in io.StringIO(text, newline=""))


@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, MessageBuilder]:
    ws = make_workspace(tmp_path_factory.mktemp("reader") / "ws")
    config = load_config(ws / "newsletter.yaml", env={})
    path = ws / "issues" / "2025-08-08-x.yaml"
    path.write_text(yaml.safe_dump({"title": "T", "articles": [ARTICLE_OK]}), encoding="utf-8")
    return config, MessageBuilder(render_issue(load_issue(path), config), headers_for(config))


@SETTINGS
@given(rows=st.lists(ROW, max_size=12), delimiter=st.sampled_from([",", ";", "\t"]))
def test_any_list_streams_every_row_out_with_its_line_and_never_crashes(
    tmp_path_factory: pytest.TempPathFactory,
    builder: tuple[Config, MessageBuilder],
    rows: list[tuple[str, str, str, str]],
    delimiter: str,
) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(["email", "name", "status", "city"])
    expected_lines = []
    for row in rows:
        expected_lines.append(physical_lines(out.getvalue()) + 1)
        writer.writerow(row)
    text = out.getvalue()
    path = tmp_path_factory.mktemp("list") / "list.csv"
    path.write_text(text, encoding="utf-8", newline="")
    try:
        with read_subscribers(path) as stream:
            got = list(stream)
    except SubscribersError as exc:
        assert str(path) in str(exc)
        assert "\x00" in text, exc  # only a NUL byte makes a text file not CSV
        return
    blank = [all(not v.strip() for v in row) for row in rows]
    lines = [line for line, b in zip(expected_lines, blank, strict=True) if not b]
    # every data row comes out once, in order, at its line: as a subscriber or a reason
    assert [r.line for r in got] == lines
    config, message_builder = builder
    signer = Signer("property-test-secret-0123456789", "l")
    seen = set()
    for item in got:
        row = rows[expected_lines.index(item.line)]
        if isinstance(item, Skipped):
            assert item.detail
            continue
        assert isinstance(item, Subscriber)
        assert item.email == validate_address(row[0].strip())
        assert item.key not in seen, "an address is never yielded twice"
        seen.add(item.key)
        assert row[2].strip().lower() in ("", "subscribed")
        # whatever the list holds, a subscriber it yields can be mailed: a row never
        # stops a send half way
        reader = recipient(config, signer, item.email, item.name, item.fields)
        parsed = email.message_from_bytes(
            message_builder.build(reader), policy=email.policy.default
        )
        assert len(parsed["To"].addresses) == 1


@SETTINGS
@given(content=st.text(max_size=300))
def test_any_text_file_as_a_list_is_read_or_refused_with_a_clear_error(
    tmp_path_factory: pytest.TempPathFactory, content: str
) -> None:
    path = tmp_path_factory.mktemp("raw") / "list.csv"
    path.write_text("email,name\n" + content, encoding="utf-8", newline="")
    try:
        with read_subscribers(path) as stream:
            for item in stream:
                assert isinstance(item, (Subscriber, Skipped))
    except SubscribersError as exc:
        assert str(path) in str(exc)


# --- headers ------------------------------------------------------------------------------

NAME = st.one_of(TEXT, LONG, st.text(), st.sampled_from(['Ann, "Bob" <bob@example.org>', "a;b"]))
TO = st.sampled_from(["ann@example.com", "o'brien+news@example.co.uk", "zoë@exämple.de"])
EXPECTED_HEADERS = Counter(
    [
        *("To", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post", "Subject"),
        *("From", "Reply-To", "List-Id", "MIME-Version", "Content-Type"),
    ]
)


def _unescape(value: str) -> str:
    """`message_from_bytes` reads 8-bit header bytes as surrogate escapes; undo that."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8")


@settings(SETTINGS, max_examples=100 * SCALE)
@given(name=NAME, to=TO)
def test_a_name_is_encoded_or_refused_and_never_adds_a_header(
    builder: tuple[Config, MessageBuilder], name: str, to: str
) -> None:
    config, message_builder = builder
    reader = recipient(config, Signer("property-test-secret-0123456789", "l"), to, name.strip())
    try:
        data = message_builder.build(reader)
    except HeaderError as exc:
        assert re.search(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]", name.strip()), exc
        return
    head = data.split(b"\n\n", 1)[0]
    assert max(len(line) for line in head.split(b"\n")) <= 998
    if to.isascii():
        assert data.isascii()
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert Counter(parsed.keys()) == EXPECTED_HEADERS
    (address,) = parsed["To"].addresses
    assert _unescape(address.addr_spec) == to
    # Python's address parser joins adjacent encoded-words with a space: compare the words
    shown = _unescape(address.display_name)
    assert shown.split() == name.split() or "".join(shown.split()) == "".join(name.split())


SUBJECT = (
    st.one_of(TEXT, st.text(max_size=200), LONG).map(str.strip).filter(lambda s: 0 < len(s) <= 200)
)


@settings(SETTINGS, max_examples=100 * SCALE)
@given(subject=SUBJECT, test=st.booleans())
def test_a_subject_arrives_exactly_or_is_refused(
    builder: tuple[Config, MessageBuilder], subject: str, test: bool
) -> None:
    config, message_builder = builder
    headers = dataclasses.replace(headers_for(config), subject=subject)
    reader = recipient(config, Signer("property-test-secret-0123456789", "l"), "a@example.com", "A")
    try:
        data = MessageBuilder(message_builder.rendered, headers, test=test).build(reader)
    except HeaderError:
        assert re.search(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]", subject)
        return
    assert data.isascii()
    head = data.split(b"\n\n", 1)[0]
    assert max(len(line) for line in head.split(b"\n")) <= 998
    words = re.findall(rb"=\?utf-8\?[bq]\?[^?]*\?=", head)
    assert all(len(word) <= 76 for word in words)  # RFC 2047 wants 75; Python's folder, 76
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["Subject"] == ("[TEST] " if test else "") + subject
    assert Counter(parsed.keys()) == EXPECTED_HEADERS
