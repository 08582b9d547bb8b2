"""Which text in a summary becomes a link: URLs with their scheme, never a lookalike name."""

from __future__ import annotations

from newsletter.content.markup import inline_html


def test_a_bare_url_with_its_scheme_becomes_a_link() -> None:
    html = inline_html("Read it at https://example.org/a/very/long/path today")
    assert '<a href="https://example.org/a/very/long/path">' in html


def test_names_that_look_like_domains_stay_text() -> None:
    html = inline_html("Written in Node.js, hosted on Ask.fm, mail kim@example.org")
    assert "<a" not in html
