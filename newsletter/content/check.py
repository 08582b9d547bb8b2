"""The preflight: what an editor wants to hear about before an issue goes to anyone.

Errors are things that must not be mailed (a TODO left in, a link mail clients cannot
open, no way to unsubscribe); warnings are worth a look (a long subject, no preheader).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import urlsplit

from newsletter.config import Config
from newsletter.content import markup
from newsletter.content.issue import Issue
from newsletter.content.render import GMAIL_CLIP_BYTES, Rendered
from newsletter.content.yamldoc import Loc, field_name
from newsletter.delivery.message import sample_recipient
from newsletter.errors import Problem

SUBJECT_MIN, SUBJECT_MAX = 10, 78
PREHEADER_MAX = 140
VAGUE_LINK_TEXT = {"click here", "here", "click", "link", "this link", "this", "more"}
_LEFTOVER = re.compile(r"\bTK\b|\bTODO\b|\bFIXME\b|\blorem ipsum\b|\bXXX\b", re.IGNORECASE)
_PLACEHOLDER_HOSTS = ("example.org", "example.com", "example.net")
#: The longest run without a space that fits a 320-pixel phone at the body's 16 px.
RUN_MAX = 32
_RUN = re.compile(rf"\S{{{RUN_MAX + 1},}}")
#: What a reader never sees of Markdown: link and image targets.
_TARGET = re.compile(r"\]\([^)\s]*(?:\s+\"[^\"]*\")?\)|\]\[[^\]]*\]|<https?://[^>]+>")


Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding(Problem):
    """A `Problem` the preflight found, an error or only a warning."""

    level: Level = "error"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.images: list[tuple[str, str | None]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a":
            self._href, self._text = values.get("href") or "", []
        elif tag == "img":
            self.images.append((values.get("src") or "", values.get("alt")))

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, " ".join("".join(self._text).split())))
            self._href = None


def _is_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def preflight(issue: Issue, rendered: Rendered, config: Config) -> list[Finding]:
    """Every finding for one issue, errors and warnings, in file order."""
    findings: list[Finding] = []

    def add(level: Level, loc: Loc | None, message: str) -> None:
        path, line = issue.where(loc or ())
        field = field_name(loc) if loc else None
        findings.append(Finding(path, line, field, message, level=level))

    subject = rendered.subject
    if not SUBJECT_MIN <= len(subject) <= SUBJECT_MAX:
        add(
            "warning",
            ("subject",),
            f"is {len(subject)} characters; inboxes show {SUBJECT_MIN}-{SUBJECT_MAX} well",
        )
    if not issue.preheader:
        add("warning", None, "no preheader: inboxes will show the first words of the body instead")
    elif len(issue.preheader) > PREHEADER_MAX:
        add(
            "warning",
            ("preheader",),
            f"is {len(issue.preheader)} characters; inboxes show about {PREHEADER_MAX}",
        )

    texts: list[tuple[Loc, str]] = [(("title",), issue.title), (("subject",), subject)]
    if issue.preheader:
        texts.append((("preheader",), issue.preheader))
    markdown: list[tuple[Loc, str]] = []
    if issue.intro:
        markdown.append((("intro",), issue.intro))
    for si, section in enumerate(issue.sections):
        texts.append((("sections", si, "title"), section.title))
        if section.intro:
            markdown.append((("sections", si, "intro"), section.intro))
    for loc, article in issue.located_articles():
        texts.append(((*loc, "headline"), article.headline))
        if article.link_text is not None:  # unset: the language's read_more, not the editor's
            texts.append(((*loc, "link_text"), article.link_text))
        if article.image is not None:  # `add` leaves a TODO where a page gave no alt text
            texts.append(((*loc, "image", "alt"), article.image.alt))
        markdown.append(((*loc, "summary"), article.summary))
        if article.summary_from is not None:
            add(
                "error",
                (*loc, "summary_from"),
                "the summary is the page's own teaser, not your words: rewrite it, then "
                "delete the `summary_from` line",
            )
        if (
            article.link_text is not None
            and article.link_text.strip().lower().rstrip(".!") in VAGUE_LINK_TEXT
        ):
            add(
                "warning",
                (*loc, "link_text"),
                f"{article.link_text!r} says nothing out of "
                "context (screen readers list links alone); say where it goes",
            )
        if urlsplit(article.url).hostname in _PLACEHOLDER_HOSTS:
            add("warning", (*loc, "url"), f"{article.url} is a placeholder link; put the real one")
    for loc, text in texts + markdown:
        if match := _LEFTOVER.search(text):
            add("error", loc, f"leftover placeholder {match.group(0)!r}")
    for loc, text in texts + markdown:
        visible = _TARGET.sub("]", text) if (loc, text) in markdown else text
        if match := _RUN.search(visible):
            run = match.group(0)
            shown = run if len(run) <= 50 else run[:47] + "..."
            add(
                "warning",
                loc,
                f"{shown!r} is {len(run)} characters without a space: phones break it "
                "mid-word and Yahoo Mail widens the whole mail for it; link it with words "
                "([the story](https://...)) or add spaces",
            )
    for loc, text in markdown:
        for href, label in markup.links(text):
            if not _is_http(href) and not href.startswith("mailto:"):
                add("error", loc, f"link {href!r} is not an absolute http(s) URL")
            if label.strip().lower() in VAGUE_LINK_TEXT:
                add("warning", loc, f"link text {label!r} is vague; say where it goes")
        for src, alt in markup.images(text):
            if not alt.strip():
                add("error", loc, f"image {src} has no alt text")

    size = rendered.html_bytes
    if size > GMAIL_CLIP_BYTES:
        add("warning", None, f"the HTML is {size / 1024:.0f} KB; Gmail clips over 102 KB")
    findings += _template_findings(rendered, config)
    return findings


def _template_findings(rendered: Rendered, config: Config) -> list[Finding]:
    """What the templates must carry for every copy: a way out and a postal address."""
    fields = sample_recipient(config).fields
    html, text = rendered.personalise(fields)
    found = _Collect()
    found.feed(html)
    where = str(config.templates_dir or "templates")
    findings: list[Finding] = []

    def add(template: str, message: str, level: Level = "error") -> None:
        findings.append(Finding(where, None, template, message, level=level))

    unsubscribe = fields["unsubscribe_url"]
    if not any(href == unsubscribe for href, _ in found.links):
        add("email.html", "no unsubscribe link: use {{ unsubscribe_url }} in an <a href>")
    if unsubscribe not in text:
        add("email.txt", "no unsubscribe link: write {{ unsubscribe_url }} in the text")
    address = config.settings.postal_address
    if address not in html or address not in text:
        add(
            "email.html/email.txt", "no postal address: use {{ newsletter.postal_address }} in both"
        )
    for src, alt in found.images:
        if alt is None:
            add("email.html", f"image {src} has no alt attribute")
    for href, label in found.links:
        if href != unsubscribe and not _is_http(href) and not href.startswith("mailto:"):
            add("email.html", f"link {href!r} is not an absolute http(s) URL")
        elif label.lower() in VAGUE_LINK_TEXT:
            add("email.html", f"link text {label!r} is vague", "warning")
    return findings
