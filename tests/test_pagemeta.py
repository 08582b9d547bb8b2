"""Reading what news pages say about themselves (pure: fixture files in, values out)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.content.collect.add import escape_markdown
from newsletter.content.collect.fetch import decode
from newsletter.content.markup import inline_html
from newsletter.content.pagemeta import (
    HEADLINE_MAX,
    SUMMARY_MAX,
    PageMeta,
    clean_url,
    page_meta,
    same_link,
    text,
)

PAGES = Path(__file__).parent / "data" / "pages"
BASE = "https://courier.example"


def meta_of(name: str, url: str = f"{BASE}/story") -> PageMeta:
    html = (PAGES / name).read_text(encoding="utf-8").replace("{base}", BASE)
    return page_meta(html, url)


def test_opengraph_is_read_first_with_relative_images_resolved_and_tracking_stripped() -> None:
    meta = meta_of("og-only.html")
    assert meta.headline == "North Koreans in Russia Face Slave-Like Conditions"
    assert meta.summary == (
        "Workers sent to building sites in the Russian Far East describe 18-hour days "
        "& passports taken on arrival."
    )
    assert meta.site_name == "Daily Courier"
    assert meta.image_url == f"{BASE}/images/2025/07/vladivostok-site.jpg"
    assert meta.image_alt == "Workers on a building site in Vladivostok"
    assert meta.canonical_url == f"{BASE}/world/asia/north-koreans-russia?id=42"
    assert not meta.paywalled


def test_json_ld_news_article_inside_a_graph() -> None:
    meta = meta_of("jsonld-only.html")
    assert meta.headline == "Diplomats Meet in Geneva as Talks Resume"
    assert meta.summary == (
        "The first round of talks in two years ended without a statement, officials said."
    )
    assert meta.image_url == "https://cdn.wire.example/geneva.jpg"
    assert meta.image_alt == "Delegates arrive at the Palais des Nations"
    assert meta.site_name == "Wire Service"
    assert meta.canonical_url is None


def test_a_bare_page_gives_its_title_on_one_line_and_nothing_else() -> None:
    meta = meta_of("title-only.html")
    assert meta.headline == "Minutes of the village council, July"
    assert (meta.summary, meta.image_url, meta.site_name) == (None, None, None)


def test_twitter_cards_and_a_paywall_flag() -> None:
    meta = meta_of("paywall.html")
    assert meta.headline == "Ship-to-Ship Transfers Rise as Sanctions Bite"  # og before JSON-LD
    # twitter:description is trusted before <meta name=description>
    assert (
        meta.summary
        == "A report tracks tankers switching off their transponders in the Yellow Sea."
    )
    assert meta.image_url == "https://img.ledger.example/tanker.jpg"
    assert meta.image_alt == "A tanker at anchor off Nampo"
    assert meta.paywalled


def test_an_image_without_alt_and_a_relative_canonical_link() -> None:
    meta = meta_of("no-alt.html", url="https://agri.example/news/123?utm_source=x")
    assert meta.image_url == "https://static.agri.example/rice-fields.jpg"
    assert meta.image_alt is None
    assert meta.canonical_url == "https://agri.example/2025/rice-harvest"


def test_the_site_name_is_cut_off_the_title() -> None:
    html = (
        "<title>Floods in the north - Daily Courier</title>"
        '<meta property="og:site_name" content="Daily Courier">'
    )
    assert page_meta(html, BASE).headline == "Floods in the north"


def test_hostile_markup_stays_text_and_javascript_images_are_dropped() -> None:
    meta = meta_of("hostile.html")
    assert meta.headline == "<script>alert(1)</script> Prize {{ config }} {% raw %}"
    assert meta.site_name == "Evil <b>Site</b>"
    assert meta.image_url is None
    assert meta.summary is not None and "\n" not in meta.summary
    html = inline_html(escape_markdown(meta.summary))
    assert "<a" not in html and "<strong>" not in html and "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "[here](javascript:alert(1)) **now**" in html
    assert "# Heading 1. listed" in html


@pytest.mark.parametrize(
    "teaser",
    [
        "1. Not a list",
        "- not a bullet",
        "# not a heading",
        "_not italics_ and `not code` and ![not](https://x.example/an-image.png)",
        "a & b &amp; c \\ d <https://autolink.example/>",
        "AT&T &#169; &copy; &#x41;",
    ],
)
def test_escaped_teasers_render_as_exactly_their_text(teaser: str) -> None:
    html = inline_html(escape_markdown(teaser))
    expected = teaser.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert html == expected


def test_long_text_is_cut_at_a_word_and_control_characters_go() -> None:
    long = "word " * 100
    cut = text(long, HEADLINE_MAX)
    assert cut is not None and len(cut) <= HEADLINE_MAX and cut.endswith("word…")
    assert text("a\x00b\u2028c\u200bd") == "a b c d"
    assert text("   ") is None
    meta = page_meta(f'<meta property="og:description" content="{"x " * 400}">', BASE)
    assert meta.summary is not None and len(meta.summary) <= SUMMARY_MAX


def test_tracking_parameters_are_stripped_and_the_rest_kept_as_written() -> None:
    url = (
        "HTTPS://News.Example/a/b?id=7&utm_source=tw&UTM_Medium=x&fbclid=abc&gclid=1"
        "&mc_cid=2&mc_eid=3&page=2#comments"
    )
    assert clean_url(url) == "https://news.example/a/b?id=7&page=2"
    assert clean_url("https://news.example/a?q=a%20b") == "https://news.example/a?q=a%20b"
    assert clean_url("https://news.example") == "https://news.example/"


def test_same_link_ignores_scheme_www_trailing_slash_and_tracking() -> None:
    assert same_link("http://www.news.example/story/?utm_source=x") == same_link(
        "https://news.example/story"
    )
    assert same_link("https://news.example/story?id=1") != same_link(
        "https://news.example/story?id=2"
    )


def test_latin1_declared_in_meta_is_decoded_as_browsers_do() -> None:
    raw = (PAGES / "latin1.html").read_bytes()
    decoded = decode(raw, None)
    meta = page_meta(decoded, BASE)
    assert meta.headline == "Café owners in Pyongyang « reopen » after the summer"
    assert meta.summary == "A résumé of the capital’s new cafés, from naïve to sûr."  # 0x92: cp1252
    assert decode("é".encode(), "utf-8") == "é"
    assert decode(b"\xef\xbb\xbf\xc3\xa9", "iso-8859-1") == "é"  # a BOM wins
    assert decode(b"caf\xe9", "no-such-charset") == "caf\ufffd"


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab1 .-+#=*_[]()<>!`\\&;:/\"'~|{}\t\n")), max_size=30))
def test_any_teaser_renders_as_the_text_it_is(raw: str) -> None:
    line = text(raw)
    if line is not None:
        expected = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert inline_html(escape_markdown(line)) == expected.replace('"', "&quot;")
