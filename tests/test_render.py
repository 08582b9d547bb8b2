"""Rendering: every word of the issue arrives, escaped, inlined, within email's rules."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.content.issue import load_issue
from newsletter.content.render import GMAIL_CLIP_BYTES, render_issue
from newsletter.delivery.message import sample_recipient
from newsletter.errors import TemplateError
from tests.workspace import MINIMAL_ISSUE, SAMPLE, make_workspace, write_issue


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws")


def personalised(ws: Path, issue_path: Path, **fields: str) -> tuple[str, str]:
    config = load_config(ws / "newsletter.yaml")
    rendered = render_issue(load_issue(issue_path), config)
    values = sample_recipient(config).fields | fields
    return rendered.personalise(values)


def test_sample_issue_html_has_every_headline_and_summary(ws: Path) -> None:
    issue = load_issue(ws / SAMPLE)
    page, text = personalised(ws, ws / SAMPLE)
    for article in issue.articles:
        assert html.escape(article.headline, quote=False) in page
        assert html.escape(article.summary, quote=False) in page
        assert f'href="{article.url}"' in page
        assert article.headline in " ".join(text.split())
        assert article.summary in " ".join(text.split())
        assert f"Read More: {article.url}" in text


def test_html_is_a_real_email_layout(ws: Path) -> None:
    page, _ = personalised(ws, ws / SAMPLE)
    assert page.startswith("<!DOCTYPE html>")
    assert '<html lang="en"' in page
    assert '<meta charset="utf-8">' in page
    assert 'role="presentation"' in page
    assert 'width="600"' in page and "max-width:600px" in page
    assert re.search(r'<div class="preheader" style="display:none[^"]*">Slave-like labour', page)
    assert "The Weekly Brief, 1 Example Street" in page
    assert re.search(
        r'<a href="https://brief.example.org/unsubscribe\?token=[\w.-]+"[^>]*>Unsubscribe', page
    )
    assert 'href="https://brief.example.org/2025-08-01-north-korea.html"' in page


def test_no_layout_rule_lives_only_in_style(ws: Path) -> None:
    page, _ = personalised(ws, ws / SAMPLE)
    # Outlook's conditional comments are for Word only; rules scoped to one client's own
    # markers (Outlook.com's data-ogsc/ogsb, Gmail's `u + .body`, iOS's data detectors)
    # only restyle what that client adds.
    outside_comments = re.sub(r"<!--\[if mso\]>.*?<!\[endif\]-->", "", page, flags=re.S)
    styles = re.findall(r"<style[^>]*>(.*?)</style>", outside_comments, re.S)
    assert styles, "the media queries must stay in <head>"
    client_scoped = re.compile(r"^(?:\[data-ogs[cb]\]|u \+ \.body|a\[x-apple-data-detectors\])")
    for block in styles:
        block = re.sub(r"/\*.*?\*/", "", block, flags=re.S)
        outside_media = re.sub(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*\s*\}", "", block).strip()
        for rule in re.findall(r"[^{}]+\{[^{}]*\}", outside_media):
            assert client_scoped.match(rule.strip()), rule
    assert "prefers-color-scheme: dark" in page
    assert "max-width: 620px" in page
    # the rules themselves are inlined
    assert re.search(r'<h1 class="title" dir="auto" style=\'[^\']*font-size:30px', page)
    assert re.search(
        r'<a class="button" href="[^"]+" [^>]*style="[^"]*background-color:#1d5fa8', page
    )


def test_editor_text_is_escaped_not_executed(ws: Path) -> None:
    path = write_issue(
        ws,
        "2025-08-08-xss.yaml",
        MINIMAL_ISSUE.replace(
            "summary: Something",
            "summary: <script>alert(1)</script> {{ 7 * 7 }} {% if x %} Something",
        ).replace("headline: First story", 'headline: "<b>Bold</b> & {{ config }}"'),
    )
    page, text = personalised(ws, path)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;Bold&lt;/b&gt; &amp; {{ config }}" in page
    assert "{{ 7 * 7 }} {% if x %}" in page and "49" not in page
    assert "<script>alert(1)</script> {{ 7 * 7 }}" in text  # plain text is not HTML


def test_markdown_renders_to_html_and_text(ws: Path) -> None:
    path = write_issue(ws, "2025-08-08-md.yaml", MINIMAL_ISSUE)
    page, text = personalised(ws, path)
    assert "<strong" in page and ">important</strong>" in page
    assert re.search(r'<a href="https://news.example.net/a"[^>]*>the source</a>', page)
    assert "Something *important* happened, says the source (https://news.example.net/a)." in (
        " ".join(text.split())
    )


def test_javascript_links_in_markdown_are_not_links(ws: Path) -> None:
    path = write_issue(
        ws,
        "2025-08-08-js.yaml",
        MINIMAL_ISSUE.replace(
            "[the source](https://news.example.net/a)", "[bad](javascript:alert(1))"
        ),
    )
    page, _ = personalised(ws, path)
    assert "javascript:" not in page.split("</head>")[1].replace("[bad](javascript:alert(1))", "")


def test_text_part_is_wrapped_and_lists_links_in_full(ws: Path) -> None:
    _, text = personalised(ws, ws / SAMPLE)
    # filled to the 72 columns of markup.fill, never past them; only a URL may be longer
    assert max(len(line) for line in text.splitlines() if "http" not in line) == 72
    assert re.search(
        r"^Unsubscribe: https://brief.example.org/unsubscribe\?token=[\w.-]+$", text, re.M
    )


def test_personal_values_are_escaped_in_html_only(ws: Path) -> None:
    page, text = personalised(
        ws,
        ws / SAMPLE,
        name='Ann <b>"&"</b>',
        unsubscribe_url="https://brief.example.org/unsubscribe?token=a&b",
    )
    assert "Hi Ann &lt;b&gt;&quot;&amp;&quot;&lt;/b&gt;," in page
    assert 'href="https://brief.example.org/unsubscribe?token=a&amp;b"' in page
    assert 'Hi Ann <b>"&"</b>,' in text
    assert "Unsubscribe: https://brief.example.org/unsubscribe?token=a&b" in text


def test_name_falls_back_when_empty(ws: Path) -> None:
    page, text = personalised(ws, ws / SAMPLE, name="")
    assert "Hi there," in page and "Hi there," in text


def text_template(ws: Path, text: str) -> Path:
    """A templates folder overriding only email.txt."""
    custom = ws / "my-templates"
    custom.mkdir()
    (custom / "email.txt").write_text(text)
    return custom


def test_slots_survive_premailer_and_editor_cannot_forge_them(ws: Path) -> None:
    config = load_config(ws / "newsletter.yaml")
    rendered = render_issue(load_issue(ws / SAMPLE), config)
    token = rendered.slots.token("unsubscribe_url", "", "h")
    assert f'href="{token}"' in rendered.html  # premailer left the href alone
    # A slot's name has a random nonce: another render, another name.
    assert render_issue(load_issue(ws / SAMPLE), config).slots.nonce != rendered.slots.nonce


def test_templates_can_be_overridden_one_file_at_a_time(ws: Path) -> None:
    custom = text_template(
        ws,
        "{{ issue.title }} for {{ subscriber.name }}\n"
        "{{ unsubscribe_url }} {{ newsletter.postal_address }}\n",
    )
    config = load_config(ws / "newsletter.yaml")
    rendered = render_issue(load_issue(ws / SAMPLE), config, custom)
    _, text = rendered.personalise({"name": "Ann", "unsubscribe_url": "https://u.example/x"})
    assert text.startswith("North Korea for Ann\nhttps://u.example/x")
    assert "<html" in rendered.html  # the HTML still comes from the defaults


def test_template_errors_are_clear(ws: Path) -> None:
    custom = ws / "broken"
    custom.mkdir()
    (custom / "email.txt").write_text("line one\n{% for x in %}\n")
    config = load_config(ws / "newsletter.yaml")
    with pytest.raises(TemplateError) as info:
        render_issue(load_issue(ws / SAMPLE), config, custom)
    assert (
        str(info.value)
        == f"{custom}/email.txt:2: Expected an expression, got 'end of statement block'"
    )
    (custom / "email.txt").write_text("{{ issue.no_such_field }}\n")
    with pytest.raises(TemplateError) as info:
        render_issue(load_issue(ws / SAMPLE), config, custom)
    assert str(info.value) == (
        "email.txt: 'newsletter.content.render.IssueView object' has no attribute 'no_such_field'"
    )
    with pytest.raises(TemplateError, match="no such templates folder"):
        render_issue(load_issue(ws / SAMPLE), config, ws / "nope")


FALLBACK = 'write {{ subscriber.get("name", "fallback") }} for a fallback'


@pytest.mark.parametrize(
    ("line", "message", "hint"),
    [
        (
            "{% if subscriber.name %}Hi{% endif %}",
            r"email\.txt:2: a template tests subscriber\.name",
            FALLBACK,
        ),
        (
            '{{ subscriber.get("name", "") or "there" }}',
            r"email\.txt:2: a template tests subscriber\.name",
            FALLBACK,
        ),
        (
            "{{ subscriber.city[:3] }}",
            r"email\.txt:2: a template slices subscriber\.city",
            "e.g. {{ subscriber.city }}",
        ),
        (
            "{{ subscriber.name|truncate(5) }}",
            r"email\.txt:2: a template slices subscriber\.name",
            "e.g. {{ subscriber.name }}",
        ),
        (
            "{{ subscriber.name|upper }}",
            r"^email\.txt: a template changes a subscriber value",
            "e.g. {{ subscriber.name }}",
        ),
        (
            "{{ unsubscribe_url|title }}",
            r"^email\.txt: a template changes a subscriber value",
            "e.g. {{ subscriber.name }}",
        ),
    ],
)
def test_a_template_that_tests_or_changes_a_subscriber_value_is_refused(
    ws: Path, line: str, message: str, hint: str
) -> None:
    """Those values are filled in after rendering: a test is always true, a change garbles."""
    custom = text_template(ws, f"{{{{ issue.title }}}}\n{line}\n{{{{ unsubscribe_url }}}}\n")
    config = load_config(ws / "newsletter.yaml")
    with pytest.raises(TemplateError, match=message) as info:
        render_issue(load_issue(ws / SAMPLE), config, custom)
    assert str(info.value).endswith(hint)  # and says what to write instead


def test_subscriber_values_may_be_printed_formatted_and_joined(ws: Path) -> None:
    custom = text_template(
        ws,
        '{{ "Dear %s of %s"|format(subscriber.get("name", "reader"), subscriber.city) }}\n'
        '{{ subscriber.email ~ "!" }} {% if issue.title %}{{ unsubscribe_url }}{% endif %}\n',
    )
    config = load_config(ws / "newsletter.yaml")
    rendered = render_issue(load_issue(ws / SAMPLE), config, custom)
    _, text = rendered.personalise(
        {"name": "", "city": "Oslo", "email": "a@b.example", "unsubscribe_url": "https://u/x"}
    )
    assert text.strip() == "Dear reader of Oslo\na@b.example! https://u/x"


def test_an_issue_over_gmails_limit_gets_a_warning(ws: Path) -> None:
    article = """\
  - headline: Story {i}
    summary: {text}
    url: https://news.example.net/{i}
"""
    body = "".join(article.format(i=i, text="word " * 400) for i in range(60))
    path = write_issue(ws, "2025-08-08-big.yaml", "title: Big one\narticles:\n" + body)
    rendered = render_issue(load_issue(path), load_config(ws / "newsletter.yaml"))
    assert rendered.html_bytes > GMAIL_CLIP_BYTES
    assert len(rendered.warnings) == 1 and "Gmail clips" in rendered.warnings[0]
    small = render_issue(load_issue(ws / SAMPLE), load_config(ws / "newsletter.yaml"))
    assert small.warnings == []
