"""`language:` and `words:` in newsletter.yaml: dates, fixed words and direction follow."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.content.issue import load_issue
from newsletter.content.render import render_issue
from newsletter.delivery.message import sample_recipient
from newsletter.errors import ConfigError
from newsletter.web.archive import build_archive
from tests.workspace import MINIMAL_ISSUE, REPO, SAMPLE, make_workspace

BASE_CONFIG = (REPO / "newsletter.yaml").read_text("utf-8")


def render_in(tmp_path: Path, extra: str) -> tuple[str, str]:
    ws = make_workspace(tmp_path / "ws", config=BASE_CONFIG + extra)
    config = load_config(ws / "newsletter.yaml", env={})
    rendered = render_issue(load_issue(ws / SAMPLE), config)
    return rendered.personalise(sample_recipient(config).fields | {"name": ""})


def test_english_is_the_default(tmp_path: Path) -> None:
    page, text = render_in(tmp_path, "")
    assert '<html lang="en" dir="ltr"' in page
    assert "1 August 2025" in page and "Hi there," in text


@pytest.mark.parametrize(
    ("language", "date", "greeting", "unsubscribe", "direction"),
    [
        ("de", "1. August 2025", "Hallo zusammen,", "Abbestellen", "ltr"),
        ("es", "1 de agosto de 2025", "Hola a todos,", "Darse de baja", "ltr"),
        ("he", "1 באוגוסט 2025", "שלום לכולם,", "ביטול הרשמה", "rtl"),
    ],
)
def test_a_language_brings_its_dates_words_and_direction(
    tmp_path: Path, language: str, date: str, greeting: str, unsubscribe: str, direction: str
) -> None:
    page, text = render_in(tmp_path, f"language: {language}\n")
    assert f'<html lang="{language}" dir="{direction}"' in page
    assert date in page and date in text
    assert f">{greeting}</p>" in page and greeting in text
    assert f">{unsubscribe}</a>" in page and f"{unsubscribe}: " in text
    assert "View this issue in your browser" not in page


def test_words_in_the_config_win_and_regions_fall_back_to_their_language(
    tmp_path: Path,
) -> None:
    page, text = render_in(tmp_path, "language: de_AT\nwords:\n  greeting: Servus\n")
    assert '<html lang="de-AT"' in page
    assert "Servus zusammen," in text
    assert "Abbestellen" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("language: klingon\n", "unknown language 'klingon'"),
        ("words:\n  greting: Hey\n", "unknown words ['greting']"),
        ("words:\n  receiving: Thanks, %s\n", "words.receiving needs two %s"),
        ("words:\n  every_issue: Every issue\n", "words.every_issue needs one %s"),
    ],
)
def test_mistakes_are_config_errors(tmp_path: Path, extra: str, message: str) -> None:
    ws = make_workspace(tmp_path / "ws", config=BASE_CONFIG + extra)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(ws / "newsletter.yaml", env={})


ARCHIVE_WORDS = {
    "de": {
        "date": "1. August 2025",
        "words": ["25. Juli 2025", "Alle Ausgaben", "Ältere Ausgabe", "Neuere Ausgabe",
                  "Abonnieren", "per E-Mail erhalten", "Im Feedreader folgen:",
                  "Zum Inhalt springen"],
    },
    "he": {
        "date": "1 באוגוסט 2025",
        "words": ["25 ביולי 2025", "כל הגיליונות", "הגיליון הקודם", "הגיליון הבא", "הרשמה",
                  "בדוא״ל", "למעקב בקורא פידים:", "דילוג לתוכן"],
    },
}  # fmt: skip
ENGLISH_ARCHIVE_WORDS = ["All issues", "Older issue", "Newer issue", "Subscribe",
                         "by email", "Follow it in a feed reader", "Skip to content",
                         "Every issue of"]  # fmt: skip


@pytest.mark.parametrize(("language", "direction"), [("de", "ltr"), ("he", "rtl")])
def test_the_archive_and_feeds_speak_the_language_too(
    tmp_path: Path, language: str, direction: str
) -> None:
    extra = f"language: {language}\nservice:\n  url: https://news.example.org/reader\n"
    ws = make_workspace(tmp_path / "ws", config=BASE_CONFIG + extra)
    config = load_config(ws / "newsletter.yaml", env={"NEWSLETTER_SECRET": "s" * 32})
    earlier = MINIMAL_ISSUE.replace("date: 2025-08-08", "date: 2025-07-25")
    (ws / "issues" / "2025-07-25-earlier.yaml").write_text(earlier, "utf-8")
    build_archive(config)
    site = ws / "site"
    index = (site / "index.html").read_text("utf-8")
    page = (site / "2025-08-01-north-korea.html").read_text("utf-8")
    atom = (site / "feed.xml").read_text("utf-8")
    rss = (site / "rss.xml").read_text("utf-8")
    expected = ARCHIVE_WORDS[language]
    for html in (index, page):
        assert f'<html lang="{language}" dir="{direction}">' in html
        assert expected["date"] in html
    shown = index + page + (site / "2025-07-25-earlier.html").read_text("utf-8")
    assert all(word in shown for word in expected["words"]), [
        word for word in expected["words"] if word not in shown
    ]
    assert [word for word in ENGLISH_ARCHIVE_WORDS if word in shown] == []
    every_issue = config.language.words["every_issue"] % config.settings.name
    assert f"<subtitle>{every_issue}</subtitle>" in atom
    assert f"<description>{every_issue}</description>" in rss
    assert f'xml:lang="{language}"' in atom and f"<language>{language}</language>" in rss


def test_the_archive_words_can_be_changed_in_the_config(tmp_path: Path) -> None:
    extra = "words:\n  all_issues: Back issues\n  every_issue: All of %s\n"
    ws = make_workspace(tmp_path / "ws", config=BASE_CONFIG + extra)
    build_archive(load_config(ws / "newsletter.yaml", env={}))
    index = (ws / "site" / "index.html").read_text("utf-8")
    assert "<h1>Back issues</h1>" in index and "All of " in index


TWO_STORIES = (
    MINIMAL_ISSUE
    + """\
  - headline: Second story
    summary: And another.
    url: https://news.example.net/second
    link_text: Den Bericht lesen
"""
)


def render_and_archive(tmp_path: Path, extra: str) -> tuple[str, str, str]:
    """The mail's HTML and text parts and the archive page of a two-story issue."""
    ws = make_workspace(tmp_path / "ws", config=BASE_CONFIG + extra)
    (ws / SAMPLE).unlink()
    path = ws / "issues" / "2025-08-08-notes.yaml"
    path.write_text(TWO_STORIES, "utf-8")
    config = load_config(ws / "newsletter.yaml", env={})
    rendered = render_issue(load_issue(path), config)
    page, text = rendered.personalise(sample_recipient(config).fields)
    build_archive(config)
    return page, text, (ws / "site" / "2025-08-08-notes.html").read_text("utf-8")


@pytest.mark.parametrize(
    ("extra", "word"),
    [
        ("language: de\n", "Weiterlesen"),
        ("language: es\n", "Leer más"),
        ("language: he\n", "להמשך קריאה"),
        ("language: de\nwords:\n  read_more: Zum Artikel\n", "Zum Artikel"),
    ],
)
def test_the_button_says_read_more_in_the_language_unless_the_article_says_otherwise(
    tmp_path: Path, extra: str, word: str
) -> None:
    page, text, archive = render_and_archive(tmp_path, extra)
    first, second = "https://news.example.net/first", "https://news.example.net/second"
    assert f'href="{first}" aria-label="{word}: First story"' in page and f">{word}</a>" in page
    assert 'aria-label="Den Bericht lesen: Second story"' in page
    assert ">Den Bericht lesen</a>" in page
    assert f"{word}: {first}" in text and f"Den Bericht lesen: {second}" in text
    assert f'<a href="{first}">{word}<span class="visually-hidden">' in archive
    assert f'<a href="{second}">Den Bericht lesen<span' in archive
    for shown in (page, text, archive):
        assert "Read More" not in shown


SECTIONED = """\
title: Notes from abroad
date: 2025-08-08
intro: |
  An English paragraph in a Hebrew newsletter.

  פסקה בעברית.
sections:
  - title: The week in Europe
    intro: A section intro in English.
    articles:
      - headline: First story
        summary: It happened.
        url: https://news.example.net/first
        source: The Example Times
"""
#: Elements that hold the editor's own words: each picks its direction from its text.
EDITOR_CLASSES = {"title", "section-title", "headline", "summary", "source"}


class _Directions(HTMLParser):
    """(tag, class, dir) of every element with an editor class, and of every <p> and <h*>."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        classes = set((attr.get("class") or "").split())
        if classes & EDITOR_CLASSES or tag in ("p", "h1", "h2", "h3"):
            self.found.append((tag, attr.get("class") or "", attr.get("dir")))


def directions(page: str) -> list[tuple[str, str, str | None]]:
    parser = _Directions()
    parser.feed(page)
    return parser.found


def test_the_editors_text_takes_its_own_direction_in_a_right_to_left_newsletter(
    tmp_path: Path,
) -> None:
    ws = make_workspace(tmp_path / "ws", config=BASE_CONFIG + "language: he\n")
    (ws / SAMPLE).unlink()
    path = ws / "issues" / "2025-08-08-abroad.yaml"
    path.write_text(SECTIONED, "utf-8")
    config = load_config(ws / "newsletter.yaml", env={})
    page, _ = render_issue(load_issue(path), config).personalise(sample_recipient(config).fields)
    build_archive(config)
    archive = (ws / "site" / "2025-08-08-abroad.html").read_text("utf-8")
    index = (ws / "site" / "index.html").read_text("utf-8")
    assert '<html lang="he" dir="rtl"' in page and '<html lang="he" dir="rtl"' in archive

    for html in (page, archive):
        found = directions(html)
        editor = [(tag, cls, d) for tag, cls, d in found if set(cls.split()) & EDITOR_CLASSES]
        # the mail's h1 has class "title"; the archive page's h1 is checked below
        assert {tag for tag, _, _ in editor} >= {"h2", "h3", "div", "p"}, editor
        assert all(d == "auto" for _, _, d in editor), editor
        # the intro's and the section intro's paragraphs, each on its own
        for text in (
            "An English paragraph in a Hebrew newsletter.",
            "פסקה בעברית.",
            "A section intro in English.",
        ):
            assert f'<p dir="auto">{text}</p>' in html, text
    assert '<h1 class="title" dir="auto"' in page
    assert '<h1 dir="auto">Notes from abroad</h1>' in archive
    assert '<h2 dir="auto"><a href="2025-08-08-abroad.html">Notes from abroad</a></h2>' in index
    # the fixed words stay in the newsletter's direction
    assert '<p class="greeting"' in page and 'class="greeting" dir=' not in page
