"""`newsletter archive`: the web pages, the index, the feeds, and what gets published."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import stat
import xml.etree.ElementTree as ET
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import lxml.html
import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import Config, load_config
from newsletter.content.issue import load_issue
from newsletter.content.render import PACKAGE_TEMPLATES, render_issue
from newsletter.errors import UsageError
from newsletter.storage.ledger import Ledger, Manifest
from newsletter.web import archive
from newsletter.web.archive import build_archive
from tests.test_email_contrast import contrast
from tests.workspace import make_workspace, write_issue

runner = CliRunner()
BASE = "https://brief.example.org/letters"
ATOM = "{http://www.w3.org/2005/Atom}"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
RFC822 = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$"
)
TAG_URI = re.compile(r"^tag:[a-z0-9.-]+,\d{4}-\d{2}-\d{2}:[A-Za-z0-9%._~-]+$")
CONFIG = f"""\
name: The Weekly Brief
from: {{email: brief@example.org, name: Brief Editors}}
postal_address: 1 Example Street, Springfield
web_base_url: {BASE}/
"""
TODAY = dt.date(2025, 8, 20)


def issue_text(title: str, headlines: list[str], *, preheader: str | None = None) -> str:
    text = f"title: {title}\nsubject: {title}, this week\n"
    if preheader:
        text += f"preheader: {preheader}\n"
    text += "intro: An intro with **bold** and <script>alert(1)</script> as text.\narticles:\n"
    for i, headline in enumerate(headlines):
        text += (
            f"  - headline: {headline}\n"
            f"    summary: The _summary_ of story {i}, see [the source](https://news.example.net/{i}).\n"
            f"    url: https://news.example.net/story/{i}\n"
        )
    return text


SECTIONS = """\
title: Sections and a picture
subject: Sections and a picture, this week
preheader: Two sections.
articles:
  - headline: Before the sections
    summary: A loose story.
    url: https://news.example.net/loose
sections:
  - title: Diplomacy
    intro: What was said.
    articles:
      - headline: A statement
        summary: It said things.
        url: https://news.example.net/statement
        image:
          url: https://img.example.net/press.jpg
          alt: A press conference with microphones
"""


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sample issue (1 Aug) plus three more: one past, one today, one in the future."""
    root = make_workspace(tmp_path / "ws", config=CONFIG)
    write_issue(root, "2025-08-08-week-two.yaml", issue_text("Week two", ["Two A", "Two B"]))
    write_issue(root, "2025-08-15-sections.yaml", SECTIONS)
    write_issue(root, "2025-08-20-today.yaml", issue_text("Today", ["Today's story"]))
    write_issue(
        root, "2025-08-29-next.yaml", issue_text("Next", ["Future story"], preheader="Soon.")
    )
    monkeypatch.chdir(root)
    return root


def config_of(root: Path) -> Config:
    return load_config(root / "newsletter.yaml", env={})


def html_of(path: Path) -> lxml.html.HtmlElement:
    return lxml.html.fromstring(path.read_bytes())


def mark_sent(root: Path, issue_id: str, status: str = "sent", provider: str = "smtp") -> None:
    """A real ledger entry, the way `send` records one (the outbox's would be a rehearsal)."""
    manifest = Manifest(
        issue=issue_id,
        issue_path=f"issues/{issue_id}.yaml",
        issue_sha256="0" * 64,
        templates_sha256="0" * 64,
        list_path="list.csv",
        list_sha256="0" * 64,
        provider=provider,
        tool_version="test",
    )
    with Ledger(root / ".newsletter" / "ledger.sqlite") as ledger:
        send = ledger.start_send(manifest)
        batch = ledger.begin_batch(send, issue_id, [("ada@example.com", "ada@example.com")])
        ledger.finish_batch(batch, status)
        ledger.finish_send(send, status="finished", counts={status: 1})


# --- the index and the pages ----------------------------------------------------------------


def test_index_lists_published_issues_newest_first_with_working_links(ws: Path) -> None:
    result = build_archive(config_of(ws), today=TODAY)
    site = ws / "site"
    assert result.out == site
    assert result.published == [
        "2025-08-15-sections",
        "2025-08-08-week-two",
        "2025-08-01-north-korea",
    ]
    assert result.left_out == ["2025-08-29-next", "2025-08-20-today"]

    index = html_of(site / "index.html")
    cards = index.xpath("//ol[@class='issues']/li")
    titles = [card.xpath("string(.//h2/a)") for card in cards]
    assert titles == ["Sections and a picture", "Week two", "North Korea"]
    dates = [card.xpath("string(.//time/@datetime)") for card in cards]
    assert dates == ["2025-08-15", "2025-08-08", "2025-08-01"]
    assert cards[0].xpath("string(.//p[@class='preheader'])") == "Two sections."
    sample = load_issue(ws / "issues" / "2025-08-01-north-korea.yaml")
    assert cards[2].xpath("string(.//p[@class='preheader'])") == sample.preheader
    for href in index.xpath("//a/@href"):
        if href.startswith("#"):
            assert index.get_element_by_id(href[1:]) is not None, href
        elif not urlsplit(href).scheme:
            assert (site / unquote(href)).is_file(), href
    assert [f"{i}.html" for i in result.published] == [
        unquote(h) for h in index.xpath("//ol[@class='issues']//h2/a/@href")
    ]


def test_each_page_is_the_issue_for_the_web(ws: Path) -> None:
    build_archive(config_of(ws), today=TODAY)
    site = ws / "site"
    for issue_id in ("2025-08-01-north-korea", "2025-08-08-week-two", "2025-08-15-sections"):
        issue = load_issue(ws / "issues" / f"{issue_id}.yaml")
        page = html_of(site / f"{issue_id}.html")
        assert page.get("lang") == "en"
        assert page.xpath("string(//h1)") == issue.title
        headlines = page.xpath("//*[contains(@class, 'headline')]/a")
        assert [h.text_content() for h in headlines] == [a.headline for a in issue.all_articles()]
        assert [h.get("href") for h in headlines] == [a.url for a in issue.all_articles()]
        # landmarks, one h1, headings that never skip a level
        for landmark in ("header", "main", "footer", "nav"):
            assert page.xpath(f"//{landmark}"), landmark
        levels = [int(h.tag[1]) for h in page.iter("h1", "h2", "h3", "h4", "h5", "h6")]
        assert levels[0] == 1 and levels.count(1) == 1
        assert all(b - a <= 1 for a, b in itertools.pairwise(levels)), levels
        assert all(img.get("alt") for img in page.iter("img"))
        # the stylesheet is shared and there; no script; nothing of the mail's
        (css,) = page.xpath("//link[@rel='stylesheet']/@href")
        assert (site / css).is_file()
        assert not page.xpath("//script")
        text = page.text_content()
        assert "Hi " not in text and "nsubscribe" not in text
        assert "\x00" not in (site / f"{issue_id}.html").read_text()


def test_pages_render_markdown_and_keep_editor_text_as_text(ws: Path) -> None:
    build_archive(config_of(ws), today=TODAY)
    page = html_of(ws / "site" / "2025-08-08-week-two.html")
    assert page.xpath("string(//div[@class='intro']//strong)") == "bold"
    assert "<script>alert(1)</script>" in page.xpath("string(//div[@class='intro'])")
    assert page.xpath("//div[@class='summary']//em")[0].text == "summary"
    links = page.xpath("//div[@class='summary']//a/@href")
    assert links == ["https://news.example.net/0", "https://news.example.net/1"]


def test_sections_images_and_heading_levels(ws: Path) -> None:
    build_archive(config_of(ws), today=TODAY)
    page = html_of(ws / "site" / "2025-08-15-sections.html")
    assert [(h.tag, h.text_content()) for h in page.iter("h1", "h2", "h3")] == [
        ("h1", "Sections and a picture"),
        ("h2", "Before the sections"),
        ("h2", "Diplomacy"),
        ("h3", "A statement"),
    ]
    (section,) = page.xpath("//section[@aria-labelledby]")
    assert page.get_element_by_id(section.get("aria-labelledby")).text_content() == "Diplomacy"
    (img,) = page.iter("img")
    assert img.get("src") == "https://img.example.net/press.jpg"
    assert img.get("alt") == "A press conference with microphones"


def test_page_names_are_where_the_mails_view_in_browser_link_points(ws: Path) -> None:
    config = config_of(ws)
    result = build_archive(config, today=TODAY)
    for issue_id in result.published:
        url = config.issue_url(issue_id)
        assert url is not None and url.startswith(BASE + "/")
        assert (ws / "site" / url.removeprefix(BASE + "/")).is_file()
        issue = load_issue(ws / "issues" / f"{issue_id}.yaml")
        assert f'href="{url}"' in render_issue(issue, config).html


def test_older_and_newer_links_walk_the_archive(ws: Path) -> None:
    build_archive(config_of(ws), today=TODAY)
    page = html_of(ws / "site" / "2025-08-08-week-two.html")
    assert page.xpath("string(//a[@rel='prev']/@href)") == "2025-08-01-north-korea.html"
    assert page.xpath("string(//a[@rel='next']/@href)") == "2025-08-15-sections.html"
    first = html_of(ws / "site" / "2025-08-01-north-korea.html")
    assert not first.xpath("//a[@rel='prev']")


# --- what is published ----------------------------------------------------------------------


def test_drafts_by_date_left_out_unless_asked(ws: Path) -> None:
    config = config_of(ws)
    build_archive(config, today=TODAY)
    names = {p.name for p in (ws / "site").iterdir()}
    assert "2025-08-20-today.html" not in names and "2025-08-29-next.html" not in names
    assert "Today" not in (ws / "site" / "index.html").read_text()

    # the next day, the issue dated today is past, and so published
    result = build_archive(config, today=TODAY + dt.timedelta(days=1))
    assert "2025-08-20-today" in result.published
    assert (ws / "site" / "2025-08-20-today.html").is_file()

    result = build_archive(config, drafts=True, today=TODAY)
    assert result.drafts == ["2025-08-29-next", "2025-08-20-today"]
    assert result.published[:2] == ["2025-08-29-next", "2025-08-20-today"]
    index = html_of(ws / "site" / "index.html")
    draft_cards = index.xpath("//li[contains(@class, 'is-draft')]//h2/a/text()")
    assert draft_cards == ["Next", "Today"]
    page = html_of(ws / "site" / "2025-08-29-next.html")
    assert page.xpath("//meta[@name='robots']/@content") == ["noindex"]
    assert "Draft" in page.xpath("string(//p[@class='draft-note'])")
    published = html_of(ws / "site" / "2025-08-08-week-two.html")
    assert not published.xpath("//meta[@name='robots']")


def test_a_sent_issue_is_published_before_its_date(ws: Path) -> None:
    mark_sent(ws, "2025-08-29-next")
    mark_sent(ws, "2025-08-20-today", status="failed")  # not delivered: still a draft
    result = build_archive(config_of(ws), today=TODAY)
    assert result.published[0] == "2025-08-29-next"
    assert result.left_out == ["2025-08-20-today"]
    assert (ws / "site" / "2025-08-29-next.html").is_file()
    assert not (ws / "site" / "2025-08-20-today.html").exists()
    page = html_of(ws / "site" / "2025-08-29-next.html")
    assert not page.xpath("//meta[@name='robots']")


def test_no_ledger_is_no_problem_and_is_not_created(ws: Path) -> None:
    build_archive(config_of(ws), today=TODAY)
    assert not (ws / ".newsletter").exists()


# --- the feeds ------------------------------------------------------------------------------


def test_atom_feed(ws: Path) -> None:
    result = build_archive(config_of(ws), today=TODAY)
    feed = ET.parse(ws / "site" / "feed.xml").getroot()
    assert feed.tag == f"{ATOM}feed"
    assert feed.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    for required in ("id", "title", "updated", "author"):
        assert len(feed.findall(f"{ATOM}{required}")) == 1, required
    assert feed.findtext(f"{ATOM}title") == "The Weekly Brief"
    assert feed.findtext(f"{ATOM}author/{ATOM}name") == "Brief Editors"
    assert urlsplit(feed.findtext(f"{ATOM}id") or "").scheme == "https"
    links = {link.get("rel"): link.get("href") for link in feed.findall(f"{ATOM}link")}
    assert links == {"self": f"{BASE}/feed.xml", "alternate": f"{BASE}/"}

    entries = feed.findall(f"{ATOM}entry")
    assert len(entries) == len(result.published) == 3
    ids = []
    for entry, issue_id in zip(entries, result.published, strict=True):
        issue = load_issue(ws / "issues" / f"{issue_id}.yaml")
        for required in ("id", "title", "updated", "published", "summary", "content"):
            assert len(entry.findall(f"{ATOM}{required}")) == 1, (issue_id, required)
        ids.append(entry.findtext(f"{ATOM}id") or "")
        assert TAG_URI.match(ids[-1]), ids[-1]
        assert entry.findtext(f"{ATOM}title") == issue.title
        for when in ("updated", "published"):
            stamp = entry.findtext(f"{ATOM}{when}") or ""
            assert RFC3339.match(stamp), stamp
            assert dt.datetime.fromisoformat(stamp).date() == issue.date
        (link,) = entry.findall(f"{ATOM}link")
        assert link.get("rel") == "alternate" and link.get("type") == "text/html"
        assert link.get("href") == f"{BASE}/{issue_id}.html"
        assert (ws / "site" / f"{issue_id}.html").is_file()
        content = entry.find(f"{ATOM}content")
        assert content is not None and content.get("type") == "html"
        body = lxml.html.fromstring(content.text or "")
        assert [a.headline for a in issue.all_articles()] == [
            h.text_content() for h in body.xpath("//*[contains(@class, 'headline')]")
        ]
    assert len(set(ids)) == len(ids)
    newest = max(dt.datetime.fromisoformat(e.findtext(f"{ATOM}updated") or "") for e in entries)
    assert dt.datetime.fromisoformat(feed.findtext(f"{ATOM}updated") or "") == newest
    assert entries[0].findtext(f"{ATOM}summary") == "Two sections."


def test_rss_feed(ws: Path) -> None:
    result = build_archive(config_of(ws), today=TODAY)
    rss = ET.parse(ws / "site" / "rss.xml").getroot()
    assert rss.tag == "rss" and rss.get("version") == "2.0"
    (channel,) = rss.findall("channel")
    assert channel.findtext("title") == "The Weekly Brief"
    assert channel.findtext("link") == f"{BASE}/"
    assert channel.findtext("description")
    (self_link,) = channel.findall(f"{ATOM}link")
    assert self_link.get("rel") == "self" and self_link.get("href") == f"{BASE}/rss.xml"
    assert RFC822.match(channel.findtext("lastBuildDate") or "")
    items = channel.findall("item")
    assert [i.findtext("link") for i in items] == [f"{BASE}/{i}.html" for i in result.published]
    dates = []
    for item in items:
        for required in ("title", "link", "guid", "pubDate", "description"):
            assert item.findtext(required), required
        assert urlsplit(item.findtext("link") or "").scheme == "https"
        stamp = item.findtext("pubDate") or ""
        assert RFC822.match(stamp), stamp
        dates.append(parsedate_to_datetime(stamp))
    assert dates == sorted(dates, reverse=True)
    assert [d.date() for d in dates] == [
        dt.date(2025, 8, 15),
        dt.date(2025, 8, 8),
        dt.date(2025, 8, 1),
    ]


def test_feeds_hold_the_newest_issues_only(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "FEED_ENTRIES", 2)
    result = build_archive(config_of(ws), today=TODAY)
    assert len(result.published) == 3
    feed = ET.parse(ws / "site" / "feed.xml").getroot()
    assert [e.findtext(f"{ATOM}title") for e in feed.findall(f"{ATOM}entry")] == [
        "Sections and a picture",
        "Week two",
    ]
    assert len(ET.parse(ws / "site" / "rss.xml").getroot().findall("channel/item")) == 2


def test_without_web_base_url_there_are_no_feeds_and_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_workspace(tmp_path / "ws", config=CONFIG.replace(f"web_base_url: {BASE}/\n", ""))
    monkeypatch.chdir(root)
    result = runner.invoke(app, ["archive"])
    assert result.exit_code == 0, result.output
    assert "warning: web_base_url is not set" in result.output
    site = root / "site"
    assert not (site / "feed.xml").exists() and not (site / "rss.xml").exists()
    assert (site / "2025-08-01-north-korea.html").is_file()
    index = html_of(site / "index.html")
    assert not index.xpath("//link[@rel='alternate']")
    assert not index.xpath("//a[@href='feed.xml']")


# --- the command, failures, and the swap ----------------------------------------------------


def test_archive_command(ws: Path) -> None:
    write_issue(ws, "2999-01-01-far.yaml", issue_text("Far", ["Far away"]))
    result = runner.invoke(app, ["archive"])
    assert result.exit_code == 0, result.output
    # every 2025 issue is past by now; 2999 is not
    assert (
        "wrote site/: index.html, style.css, favicon.svg, favicon.ico, feed.xml, rss.xml "
        "and 5 issue pages\n" in result.output
    )
    assert "not published yet: 2999-01-01-far (neither sent nor past their date" in result.output
    assert (ws / "site" / "2025-08-01-north-korea.html").is_file()
    assert not (ws / "site" / "2999-01-01-far.html").exists()
    result = runner.invoke(app, ["archive", "--out", "public", "--drafts"])
    assert result.exit_code == 0, result.output
    assert (
        "wrote public/: index.html, style.css, favicon.svg, favicon.ico, feed.xml, rss.xml "
        "and 6 issue pages, "
        "1 of" in result.output
    )
    assert (ws / "public" / "2999-01-01-far.html").is_file()


def test_invalid_issue_stops_the_build_and_keeps_the_site(ws: Path) -> None:
    assert runner.invoke(app, ["archive"]).exit_code == 0
    before = {p.name: p.read_bytes() for p in (ws / "site").iterdir()}
    write_issue(ws, "2025-08-10-bad.yaml", "title: Bad\nsubjet: x\narticles:\n  - url: nope\n")
    write_issue(ws, "2025-08-11-worse.yaml", "title: [unclosed\n")
    result = runner.invoke(app, ["archive"])
    assert result.exit_code == 1
    out = result.output
    assert "error: issues/2025-08-10-bad.yaml:2: subjet: unknown field" in out
    assert (
        "error: issues/2025-08-10-bad.yaml:4: articles[0].url: not an absolute http(s) URL" in out
    )
    assert "error: issues/2025-08-11-worse.yaml:" in out and "YAML syntax error" in out
    assert {p.name: p.read_bytes() for p in (ws / "site").iterdir()} == before
    assert [p.name for p in ws.iterdir() if p.name.startswith(".site")] == []


def test_a_failed_write_leaves_the_previous_site_whole(ws: Path) -> None:
    build_archive(config_of(ws), today=TODAY)
    site = ws / "site"
    before = {p.name: p.read_bytes() for p in site.iterdir()}
    with pytest.raises(UsageError, match="could not write the site"):
        archive.publish(site, {"index.html": b"new", "no/such/folder.html": b"x"})
    assert {p.name: p.read_bytes() for p in site.iterdir()} == before
    assert [p.name for p in ws.iterdir() if p.name.startswith(".site")] == []


def test_a_rebuild_replaces_the_site_and_drops_removed_issues(ws: Path) -> None:
    config = config_of(ws)
    build_archive(config, today=TODAY)
    (ws / "issues" / "2025-08-08-week-two.yaml").unlink()
    build_archive(config, today=TODAY)
    assert not (ws / "site" / "2025-08-08-week-two.html").exists()
    assert "Week two" not in (ws / "site" / "index.html").read_text()
    assert [p.name for p in ws.iterdir() if p.name.startswith(".site")] == []


def test_refuses_to_replace_a_folder_it_did_not_make(ws: Path) -> None:
    build_archive(config_of(ws), today=TODAY)
    (ws / "site" / "CNAME").write_text("brief.example.org\n")
    result = runner.invoke(app, ["archive"])
    assert result.exit_code == 2
    assert "did not make (CNAME)" in result.output
    assert (ws / "site" / "CNAME").read_text() == "brief.example.org\n"
    result = runner.invoke(app, ["archive", "--out", "."])
    assert result.exit_code == 2
    assert (ws / "newsletter.yaml").is_file() and (ws / "issues").is_dir()


def test_the_site_gets_the_permissions_of_any_new_folder(ws: Path) -> None:
    build_archive(config_of(ws), today=TODAY)
    (ws / "plain").mkdir()
    (ws / "plain" / "file").write_bytes(b"")
    mode = stat.S_IMODE
    assert mode((ws / "site").stat().st_mode) == mode((ws / "plain").stat().st_mode)
    assert mode((ws / "site" / "index.html").stat().st_mode) == mode(
        (ws / "plain" / "file").stat().st_mode
    )


def test_an_empty_folder_is_fine(ws: Path) -> None:
    (ws / "public").mkdir()
    result = build_archive(config_of(ws), ws / "public", today=TODAY)
    assert (result.out / "index.html").is_file()


def test_templates_can_be_overridden(ws: Path) -> None:
    (ws / "mine" / "archive").mkdir(parents=True)
    (ws / "mine" / "archive" / "style.css").write_text("body { color: red }\n")
    build_archive(config_of(ws), today=TODAY, templates=ws / "mine")
    assert (ws / "site" / "style.css").read_text() == "body { color: red }\n"
    assert "Week two" in (ws / "site" / "index.html").read_text()  # the rest: the defaults


def test_the_signup_form_is_styled_as_one_with_readable_colours_and_44px_targets() -> None:
    """Unstyled, the archive's form was a small grey field and a grey system button: the
    one thing a reader who found the archive might do looked unfinished."""
    css = (PACKAGE_TEMPLATES / "archive" / "style.css").read_text("utf-8")
    light, dark = (
        dict(re.findall(r"--([\w-]+):\s*(#[0-9a-f]{3,6})", block))
        for block in css.split("@media (prefers-color-scheme: dark)", 1)
    )
    for palette in (light, {**light, **dark}):
        assert contrast(palette["button-text"], palette["button-bg"]) >= 4.5
        assert contrast(palette["strong"], palette["bg"]) >= 4.5  # what the reader types
        assert contrast(palette["muted"], palette["bg"]) >= 4.5  # the placeholder
        assert contrast(palette["button-bg"], palette["bg"]) >= 3  # the button stands out
    rules = dict(re.findall(r"(\.subscribe[^{]*)\{([^}]*)\}", css))
    sized = rules[".subscribe input, .subscribe button "]
    assert "min-height: 2.75rem" in sized  # 44 px
    assert "background: var(--button-bg)" in rules[".subscribe button "]
