"""`newsletter add`: links and feeds into an issue file, through the CLI, on real files.

The pages come from a real HTTP server on 127.0.0.1 (tests/servers/pages.py), so every
`add` here says `--allow-local`; without it the server is refused, as the first test shows.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import load_config
from newsletter.content.issue import load_issue
from newsletter.scaffold import next_issue_date
from tests.sending import SECRET
from tests.servers.pages import PageServer
from tests.servers.smtp import SMTPServer
from tests.workspace import make_workspace, write_issue

runner = CliRunner()


class Tags(HTMLParser):
    """The elements, attributes and link targets of rendered HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.attributes: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.add(tag)
        self.attributes.update(name for name, _ in attrs)
        self.hrefs += [value or "" for name, value in attrs if name in ("href", "src")]


@pytest.fixture
def pages() -> Iterator[PageServer]:
    with PageServer(slow_seconds=3.0) as server:
        yield server


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_workspace(tmp_path / "ws")
    monkeypatch.chdir(root)
    return root


def add(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["add", "--allow-local", *args])
    return result.exit_code, result.output


def articles(path: Path) -> list[dict[str, object]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    found = list(data.get("articles") or [])
    for section in data.get("sections") or []:
        found += section["articles"]
    return found


HAND_WRITTEN = """\
# This week's issue. Ten stories, one topic.
title: North Korea   # the headline of the mail
date: 2025-08-08
subject: 'North Korea this week: labour, a swim and a harvest'
preheader: "Slave-like labour in Russia, a defector's swim and more."

intro: |
  Ten stories from the week on **North Korea**.
  Two lines, kept as a block.

articles:
  # the lead story first
  - headline: "A Story the Editor Wrote"
    summary: >-
      Folded text that the editor
      wrote by hand.
    url: https://news.example.net/lead   # found on Monday
    source: The Post


  # keep this one short
  - headline: Another
    summary: Short.   # trailing comment
    url: https://news.example.net/second
# the end of the articles
"""


def test_add_keeps_every_byte_of_a_hand_commented_issue(ws: Path, pages: PageServer) -> None:
    path = write_issue(ws, "2025-08-08-north-korea.yaml", HAND_WRITTEN)
    code, output = add("--issue", str(path), pages.url("/news/og-only"))
    assert code == 0, output
    after = path.read_text(encoding="utf-8")
    before_lines, after_lines = HAND_WRITTEN.splitlines(), after.splitlines()
    ops = difflib.SequenceMatcher(a=before_lines, b=after_lines, autojunk=False).get_opcodes()
    end = len(before_lines)  # appended after the last article and the comment below it
    assert [op for op in ops if op[0] != "equal"] == [("insert", end, end, end, end + 8)], after
    inserted = after_lines[end:]
    assert inserted[0] == "  - headline: North Koreans in Russia Face Slave-Like Conditions"
    assert all(line.startswith("    ") for line in inserted[1:])
    issue = load_issue(path)
    assert [a.headline for a in issue.articles][-1].startswith("North Koreans")
    assert issue.articles[-1].summary_from == "page"


def test_an_article_has_the_pages_headline_source_image_and_clean_url(
    ws: Path, pages: PageServer
) -> None:
    path = write_issue(ws, "2025-08-08-x.yaml", HAND_WRITTEN)
    code, output = add("--issue", str(path), pages.url("/news/og-only"), pages.url("/news/no-alt"))
    assert code == 0, output
    assert "added North Koreans in Russia Face Slave-Like Conditions (Daily Courier)" in output
    assert "the image has no alt text: say what it shows" in output
    assert "2 added to issues/2025-08-08-x.yaml, 0 skipped, 0 failed" in output
    og, no_alt = articles(path)[-2:]
    assert og == {
        "headline": "North Koreans in Russia Face Slave-Like Conditions",
        "source": "Daily Courier",
        "summary": "Workers sent to building sites in the Russian Far East describe 18-hour "
        "days & passports taken on arrival.",
        "summary_from": "page",
        "url": pages.url("/world/asia/north-koreans-russia?id=42"),
        "image": {
            "url": pages.url("/images/2025/07/vladivostok-site.jpg"),
            "alt": "Workers on a building site in Vladivostok",
        },
    }
    assert no_alt["image"] == {
        "url": "https://static.agri.example/rice-fields.jpg",
        "alt": "TODO: what the picture shows",
    }


def test_loopback_is_refused_without_allow_local(ws: Path, pages: PageServer) -> None:
    path = write_issue(ws, "2025-08-08-x.yaml", HAND_WRITTEN)
    result = runner.invoke(app, ["add", "--issue", str(path), pages.url("/news/og-only")])
    assert result.exit_code == 1
    assert "is a private, loopback or link-local address (127.0.0.1); refused" in result.output
    assert pages.requests == []
    assert path.read_text(encoding="utf-8") == HAND_WRITTEN


def test_each_failure_is_one_line_and_the_other_links_are_added(
    ws: Path, pages: PageServer
) -> None:
    path = write_issue(ws, "2025-08-08-x.yaml", HAND_WRITTEN)
    code, output = add(
        "--issue",
        str(path),
        "--timeout",
        "0.5",
        pages.url("/missing"),
        pages.url("/slow"),
        "file:///etc/passwd",
        pages.url("/plain.txt"),
        pages.url("/go/file"),
        pages.url("/news/title-only"),
        pages.url("/huge"),
    )
    assert code == 1
    assert f"error: {pages.url('/missing')}: 404 Not Found\n" in output
    assert f"error: {pages.url('/slow')}: no answer within 0.5 s\n" in output
    assert "error: file:///etc/passwd: file links are not fetched; give an http(s) URL\n" in output
    assert f"error: {pages.url('/plain.txt')}: not a web page (text/plain)\n" in output
    assert f"error: {pages.url('/go/file')}: file links are not fetched" in output
    assert "Traceback" not in output
    assert "2 added to issues/2025-08-08-x.yaml, 0 skipped, 5 failed" in output
    added = articles(path)[-2:]
    assert [a["headline"] for a in added] == [
        "Minutes of the village council, July",
        "The Longest Page on the Web",
    ]
    assert added[0]["summary"] == "TODO: two or three sentences on the story."
    assert "summary_from" not in added[0]


def test_duplicates_are_skipped_unless_again(ws: Path, pages: PageServer) -> None:
    write_issue(
        ws,
        "2025-07-25-earlier.yaml",
        "title: Earlier\narticles:\n  - headline: Swim\n    summary: A swim.\n"
        f"    url: {pages.url('/news/moved?ref=home&utm_source=x')}\n",
    )
    path = write_issue(ws, "2025-08-08-x.yaml", HAND_WRITTEN)
    code, output = add(
        "--issue",
        str(path),
        "https://news.example.net/second?utm_source=newsletter",  # already in this issue
        pages.url("/short/defector"),  # redirects to the page featured on 2025-07-25
        pages.url("/news/paywall"),
        pages.url("/news/paywall?fbclid=abc"),  # the same page again in this command
    )
    assert code == 0, output
    assert (
        "skipped: https://news.example.net/second?utm_source=newsletter: already in this issue"
        in output
    )
    assert (
        f"skipped: {pages.url('/short/defector')}: featured in 2025-07-25; "
        "--again adds it anyway" in output
    )
    assert f"skipped: {pages.url('/news/paywall?fbclid=abc')}: already in this issue" in output
    assert "the page says it is behind a paywall" in output
    assert [a["headline"] for a in articles(path)][2:] == [
        "Ship-to-Ship Transfers Rise as Sanctions Bite"
    ]

    code, output = add("--issue", str(path), "--again", pages.url("/short/defector"))
    assert code == 0, output
    assert f"redirected (301, 302) to {pages.url('/news/moved?utm_source')}" in output
    assert f"stored as {pages.url('/news/moved?ref=home')}" in output
    assert articles(path)[-1]["url"] == pages.url("/news/moved?ref=home")


def test_section_adds_to_that_section_or_starts_it(ws: Path, pages: PageServer) -> None:
    path = write_issue(ws, "2025-08-08-x.yaml", HAND_WRITTEN)
    assert add("--issue", str(path), "--section", "Diplomacy", pages.url("/news/og-only"))[0] == 0
    assert add("--issue", str(path), "--section", "diplomacy", pages.url("/news/no-alt"))[0] == 0
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert len(data["articles"]) == 2
    (section,) = data["sections"]
    assert section["title"] == "Diplomacy"
    assert [a["source"] for a in section["articles"]] == ["Daily Courier", "Agri Weekly"]
    load_issue(path)


def test_fetched_markup_and_template_code_arrive_as_text(ws: Path, pages: PageServer) -> None:
    path = write_issue(ws, "2025-08-08-x.yaml", HAND_WRITTEN)
    assert add("--issue", str(path), pages.url("/news/hostile"))[0] == 0
    result = runner.invoke(app, ["render", str(path), "--out", "build"])
    assert result.exit_code == 0, result.output
    html = (ws / "build" / "2025-08-08-x.html").read_text(encoding="utf-8")
    text = (ws / "build" / "2025-08-08-x.txt").read_text(encoding="utf-8")
    tags = Tags()
    tags.feed(html)
    assert "script" not in tags.names and "img" not in tags.names and "<strong>now" not in html
    assert not any(name.startswith("on") for name in tags.attributes)
    assert not any(href.startswith("javascript") for href in tags.hrefs)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Prize {{ config }} {% raw %}" in html
    assert "Evil &lt;b&gt;Site&lt;/b&gt;" in html
    assert "{{ 7*7 }}" in html and "{{ 7*7 }}" in text
    assert "[here](javascript:alert(1)) **now** &lt;img src=x onerror=alert(1)&gt;" in html


def test_check_says_the_teaser_is_the_pages_words(ws: Path, pages: PageServer) -> None:
    path = write_issue(ws, "2025-08-08-x.yaml", HAND_WRITTEN)
    assert add("--issue", str(path), pages.url("/news/og-only"))[0] == 0
    result = runner.invoke(app, ["check", "issues/2025-08-08-x.yaml"])
    assert result.exit_code == 1
    line = path.read_text(encoding="utf-8").splitlines().index("    summary_from: page") + 1
    assert (
        f"error: issues/2025-08-08-x.yaml:{line}: articles[2].summary_from: the summary is the "
        "page's own teaser, not your words: rewrite it, then delete the `summary_from` line"
    ) in result.output
    # the editor rewrites the summary and deletes the marker: the error goes
    text = path.read_text(encoding="utf-8").replace("    summary_from: page\n", "")
    path.write_text(text, encoding="utf-8")
    assert "summary_from" not in runner.invoke(app, ["check", str(path)]).output


def test_from_feed_adds_the_entries_since_a_date(ws: Path, pages: PageServer) -> None:
    path = write_issue(ws, "2025-08-08-x.yaml", HAND_WRITTEN)
    since = (dt.date.today() - dt.timedelta(days=60)).isoformat()
    code, output = add(
        "--issue", str(path), "--from-feed", pages.url("/feeds/atom.xml"), "--since", since
    )
    assert code == 0, output
    assert [a["headline"] for a in articles(path)][2:] == [
        "Ship-to-Ship Transfers Rise as Sanctions Bite",  # a relative link in the feed
        "Defector Swims Across the Border",
        "Café owners in Pyongyang « reopen » after the summer",  # 40 days old
    ]


def test_a_feed_that_is_not_one_is_a_one_line_error(ws: Path, pages: PageServer) -> None:
    path = write_issue(ws, "2025-08-08-x.yaml", HAND_WRITTEN)
    code, output = add("--issue", str(path), "--from-feed", pages.url("/news/og-only"))
    assert code == 1
    assert f"error: {pages.url('/news/og-only')}: feed: not an RSS or Atom feed" in output


def test_from_feeds_without_sources_says_where_to_list_them(ws: Path) -> None:
    code, output = add("--from-feeds")
    assert code == 2
    assert "no feeds: list them under `sources:` in newsletter.yaml" in output


def test_an_empty_week_to_a_checked_draft_in_three_commands(ws: Path, pages: PageServer) -> None:
    config = (ws / "newsletter.yaml").read_text(encoding="utf-8")
    config += f"sources:\n  - {pages.url('/feeds/rss.xml')}\n  - {pages.url('/feeds/atom.xml')}\n"
    (ws / "newsletter.yaml").write_text(config, encoding="utf-8")
    assert load_config(ws / "newsletter.yaml").settings.sources[0].endswith("/feeds/rss.xml")
    date = next_issue_date("friday")
    path = ws / "issues" / f"{date}-the-weekly-brief.yaml"

    # 1. the links the editor found this week
    code, output = add(pages.url("/news/og-only"), pages.url("/news/jsonld-only"))
    assert code == 0, output
    assert f"started issues/{path.name}" in output
    assert f"2 added to issues/{path.name}" in output
    # 2. the week's entries of the feeds the editor follows (their old entries are left out)
    code, output = add("--from-feeds")
    assert code == 0, output
    assert "started" not in output
    assert f"skipped: {pages.url('/news/jsonld-only?utm_source=rss&utm_medium=feed')}" in output
    assert f"3 added to issues/{path.name}, 1 skipped, 0 failed" in output
    # 3. the check: what is left for the editor to write
    result = runner.invoke(app, ["check", f"issues/{path.name}"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len([e for e in errors if "the summary is the page's own teaser" in e]) == 5
    placeholders = [e.split(": ")[2] for e in errors if "leftover placeholder 'TODO'" in e]
    assert sorted(placeholders) == ["articles[2].image.alt", "intro", "preheader", "subject"]
    assert len(errors) == 9

    issue = load_issue(path)
    assert [(a.headline, a.source) for a in issue.articles] == [
        ("North Koreans in Russia Face Slave-Like Conditions", "Daily Courier"),
        ("Diplomats Meet in Geneva as Talks Resume", "Wire Service"),
        ("Rice Harvest Expected to Fall Short", "Agri Weekly"),
        ("Ship-to-Ship Transfers Rise as Sanctions Bite", "The Ledger"),
        ("Defector Swims Across the Border", "Border News"),
    ]
    result = runner.invoke(app, ["render", f"issues/{path.name}"])
    assert result.exit_code == 0, result.output
    html = (ws / "build" / f"{path.stem}.html").read_text(encoding="utf-8")
    for article in issue.articles:
        assert article.headline in html
        assert f">{article.source}<" in html
    assert 'src="https://cdn.wire.example/geneva.jpg"' in html
    assert 'alt="A tanker at anchor off Nampo"' in html
    assert "example.org/TODO" not in html  # the skeleton's placeholder article is gone


def test_wrong_combinations_are_usage_errors(ws: Path) -> None:
    assert add() == (2, "error: give one or more URLs, or --from-feed FEED_URL, or --from-feeds\n")
    code, output = add("--since", "2025-07-01", "https://news.example.net/x")
    assert (code, output) == (2, "error: --since goes with --from-feed FEED_URL or --from-feeds\n")
    code, output = add("--from-feed", "https://news.example.net/rss", "https://news.example.net/x")
    assert (code, output) == (2, "error: give links or feeds, not both\n")


def test_feeds_with_nothing_new_start_no_issue(ws: Path, pages: PageServer) -> None:
    since = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    code, output = add("--from-feed", pages.url("/feeds/rss.xml"), "--since", since)
    assert code == 0, output
    assert output == f"feed entries since {since}\n0 added, 0 skipped, 0 failed\n"
    assert [p.name for p in (ws / "issues").iterdir()] == ["2025-08-01-north-korea.yaml"]


def test_feeds_default_to_entries_since_the_last_sent_issue(
    ws: Path, pages: PageServer, smtp_server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sent means a reader received it: an outbox rehearsal does not move the day."""
    sent_on = dt.date.today() - dt.timedelta(days=3)
    write_issue(
        ws,
        f"{sent_on}-last-week.yaml",
        "title: Last week\narticles:\n  - headline: Old news\n    summary: Old.\n"
        "    url: https://news.example.net/old\n",
    )
    for name, value in {
        "NEWSLETTER_SECRET": SECRET,
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
    }.items():
        monkeypatch.setenv(name, value)
    send = ["send", f"issues/{sent_on}-last-week.yaml", "--to", "subscribers.example.csv", "--yes"]
    result = runner.invoke(app, send)  # the outbox: a rehearsal
    assert result.exit_code == 0, result.output
    scratch = write_issue(ws, "2025-01-03-scratch.yaml", HAND_WRITTEN)
    code, output = add("--from-feed", pages.url("/feeds/rss.xml"), "--issue", str(scratch))
    assert output.startswith(f"feed entries since {dt.date.today() - dt.timedelta(days=7)}\n")
    scratch.unlink()

    result = runner.invoke(app, [*send, "--provider", "smtp"])
    assert result.exit_code == 0, result.output
    assert smtp_server.messages
    code, output = add("--from-feed", pages.url("/feeds/rss.xml"))
    assert code == 0, output
    assert output.startswith(f"feed entries since {sent_on}\n")
    assert "2 added to issues/" in output  # this week's two entries, not last month's
