"""`newsletter add`: links (or a feed's new entries) in, articles appended to an issue out.

    report = add_links(config, ["https://news.example.net/story"], AddOptions())
    for result in report.results:
        print(result.outcome, result.url, result.message)

Each link is fetched (a few at a time), read for its headline, teaser, image and site,
and appended to the issue: by default the next unsent issue, started with `new` if there
is none. A link already in the issue, or in another issue file, is skipped unless
`again`. The teaser is the publisher's words, so the article says `summary_from: page`
and `check` reports it until the editor rewrites it. A link that fails is one line in the
report; the others are added all the same.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from newsletter.config import Config
from newsletter.content import pagemeta
from newsletter.content.collect import feeds
from newsletter.content.collect.edit import PLACEHOLDER_URL, IssueFile
from newsletter.content.collect.fetch import (
    DEFAULT_TIMEOUT,
    FEED_ACCEPT,
    FEED_BYTES,
    HTML_TYPES,
    WORKERS,
    Fetched,
    fetch,
    new_client,
)
from newsletter.content.issue import load_issue
from newsletter.content.links import Hop
from newsletter.errors import FetchError, NewsletterError, UsageError

Outcome = Literal["added", "skipped", "failed"]
#: What `summary_from` says: the summary is the page's teaser, not the editor's words.
FROM_PAGE = "page"
NO_HEADLINE = "TODO: the headline"
NO_SUMMARY = "TODO: two or three sentences on the story."
NO_ALT = "TODO: what the picture shows"
_STEM_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})")
# Markdown that a teaser must not carry into the issue: it is text, not markup.
_MARKDOWN = re.compile(r"([\\`*_\[\]<>]|&(?=#|[A-Za-z][A-Za-z0-9]*;))")
_LINE_START = re.compile(r"^(\s*\d*)([-+=#.)])")
#: A scheme's colon: escaped, a URL in a teaser stays text rather than becoming a link.
_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*):(?=//)")


@dataclass(frozen=True)
class AddOptions:
    issue: Path | None = None
    section: str | None = None
    again: bool = False
    allow_local: bool = False
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Result:
    """What became of one link: added, skipped (and why) or failed (and why)."""

    url: str
    outcome: Outcome
    message: str
    headline: str | None = None
    final_url: str | None = None
    redirects: tuple[Hop, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class AddReport:
    """What `add` did: the issue (None when nothing was new), and each link's result."""

    issue: Path | None
    created: bool
    results: list[Result] = field(default_factory=list)
    since: dt.date | None = None  # feeds: entries from this day on

    def count(self, outcome: Outcome) -> int:
        return sum(r.outcome == outcome for r in self.results)


def add_links(config: Config, urls: Sequence[str], options: AddOptions) -> AddReport:
    """Fetch each URL and append an article for it to the issue; see the module docstring."""
    if not urls:
        raise UsageError("give one or more URLs, or --from-feed FEED_URL, or --from-feeds")
    path, created = _target(config, options.issue)
    report = AddReport(path, created)
    issue = IssueFile(path)
    seen = _featured(config, path)
    here = {pagemeta.same_link(a.url): "this issue" for a in issue.issue.all_articles()}
    here.pop(pagemeta.same_link(PLACEHOLDER_URL), None)

    def duplicate(url: str) -> str | None:
        key = pagemeta.same_link(url)
        if key in here:
            return f"already in {here[key]}"
        if key in seen and not options.again:
            return f"featured in {seen[key]}; --again adds it anyway"
        return None

    wanted: list[str] = []
    for url in dict.fromkeys(u.strip() for u in urls if u.strip()):
        if why := duplicate(url):
            report.results.append(Result(url, "skipped", why))
        else:
            wanted.append(url)
    with new_client(options.timeout) as client:
        fetched = _fetch_all(client, wanted, options)
    for url, got in zip(wanted, fetched, strict=True):
        if isinstance(got, FetchError):
            report.results.append(Result(url, "failed", str(got)))
            continue
        try:
            article, notes = _article(got)
        except FetchError as exc:
            report.results.append(Result(url, "failed", str(exc), redirects=got.redirects))
            continue
        if why := duplicate(article["url"]):
            report.results.append(Result(url, "skipped", why, redirects=got.redirects))
            continue
        issue.append(article, options.section)
        here[pagemeta.same_link(article["url"])] = "this issue"
        report.results.append(
            Result(
                url,
                "added",
                f"{article['headline']} ({article['source']})",
                headline=article["headline"],
                final_url=got.final_url,
                redirects=got.redirects,
                notes=tuple(notes),
            )
        )
    if issue.added:
        issue.save()
    return report


def add_from_feeds(
    config: Config, feed_urls: Sequence[str], options: AddOptions, since: dt.date | None = None
) -> AddReport:
    """Add the entries of each feed published since `since` (default: the last sent issue)."""
    if not feed_urls:
        raise UsageError(
            "no feeds: list them under `sources:` in newsletter.yaml, or give --from-feed URL"
        )
    start = since or last_sent_date(config) or dt.date.today() - dt.timedelta(days=7)
    start_at = dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC)
    failed: list[Result] = []
    links: list[str] = []
    with new_client(options.timeout) as client:
        for feed_url in dict.fromkeys(feed_urls):
            try:
                got = fetch(
                    client,
                    feed_url,
                    allow_local=options.allow_local,
                    timeout=options.timeout,
                    max_bytes=FEED_BYTES,
                    accept=FEED_ACCEPT,
                )
                found = feeds.entries(got.body, got.final_url, got.content_type)
            except FetchError as exc:
                failed.append(Result(feed_url, "failed", f"feed: {exc}"))
                continue
            links += [e.url for e in feeds.since(found, start_at)]
    if not links:  # nothing new: no issue is started for it
        return AddReport(options.issue, False, failed, since=start)
    report = add_links(config, links, options)
    report.results[:0] = failed
    report.since = start
    return report


def last_sent_date(config: Config) -> dt.date | None:
    """The date of the newest issue the ledger says someone received."""
    from newsletter.storage.store import existing_ledger

    ledger = existing_ledger(config)
    if ledger is None:
        return None
    dated = sorted(_issue_files(config), reverse=True)
    with ledger:
        for date, path in dated:
            if ledger.was_sent(path.stem):
                return date
    return None


def escape_markdown(text: str) -> str:
    """`text` as Markdown that renders as exactly this text: no links, emphasis or markup."""
    escaped = _SCHEME.sub(r"\1\\:", _MARKDOWN.sub(r"\\\1", text))
    return _LINE_START.sub(lambda m: f"{m.group(1)}\\{m.group(2)}", escaped)


# --- the parts -------------------------------------------------------------------------------


def _fetch_all(
    client: httpx.Client, urls: list[str], options: AddOptions
) -> list[Fetched | FetchError]:
    def one(url: str) -> Fetched | FetchError:
        try:
            return fetch(client, url, allow_local=options.allow_local, timeout=options.timeout)
        except FetchError as exc:
            return exc

    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(urls)), thread_name_prefix="add") as pool:
        return list(pool.map(one, urls))


def _article(got: Fetched) -> tuple[dict[str, Any], list[str]]:
    """The article for a fetched page, and notes for the editor."""
    if got.content_type and got.content_type not in HTML_TYPES:
        raise FetchError(f"not a web page ({got.content_type})")
    meta = pagemeta.page_meta(got.text, got.final_url)
    url = meta.canonical_url or pagemeta.clean_url(got.final_url)
    host = urlsplit(url).hostname or ""
    notes = []
    if got.redirects:
        statuses = ", ".join(str(hop.status) for hop in got.redirects)
        notes.append(f"redirected ({statuses}) to {got.final_url}")
    if url != got.url:
        notes.append(f"stored as {url}")
    if meta.paywalled:
        notes.append("the page says it is behind a paywall")
    if got.truncated:
        notes.append("the page is very large: only its beginning was read")
    article: dict[str, Any] = {
        "headline": meta.headline or NO_HEADLINE,
        "source": meta.site_name or host.removeprefix("www."),
    }
    if meta.headline is None:
        notes.append("no headline on the page: write one")
    if meta.summary:
        article["summary"] = escape_markdown(meta.summary)
        article["summary_from"] = FROM_PAGE
        notes.append("the summary is the page's teaser: rewrite it")
    else:
        article["summary"] = NO_SUMMARY
        notes.append("no teaser on the page: write the summary")
    article["url"] = url
    if meta.image_url:
        article["image"] = {"url": meta.image_url, "alt": meta.image_alt or NO_ALT}
        if not meta.image_alt:
            notes.append("the image has no alt text: say what it shows")
    return article, notes


def _target(config: Config, given: Path | None) -> tuple[Path, bool]:
    """The issue to add to: the one given, else the next unsent one, else a new one."""
    if given is not None:
        if not given.is_file():
            raise UsageError(f"{given}: no such issue file; leave out --issue to use the next one")
        return given, False
    today = dt.date.today()
    upcoming = [(d, p) for d, p in sorted(_issue_files(config)) if d >= today]
    if upcoming:
        sent: set[str] = set()
        from newsletter.storage.store import existing_ledger

        ledger = existing_ledger(config)
        if ledger is not None:
            with ledger:
                sent = {p.stem for _, p in upcoming if ledger.was_sent(p.stem)}
        for _, path in upcoming:
            if path.stem not in sent:
                return path, False
    from newsletter.scaffold import new_issue

    return new_issue(config, config.settings.name).path, True


def _issue_files(config: Config) -> Iterable[tuple[dt.date, Path]]:
    for path in config.issues_dir.glob("*.yaml"):
        if match := _STEM_DATE.match(path.name):
            try:
                yield dt.date.fromisoformat(match.group(1)), path
            except ValueError:
                continue


def _featured(config: Config, target: Path) -> dict[str, str]:
    """Every link of the other issue files, by its comparison key, with the issue's date."""
    found: dict[str, str] = {}
    for _, path in sorted(_issue_files(config)):
        if path.resolve() == target.resolve():
            continue
        try:
            issue = load_issue(path)
        except NewsletterError:
            continue  # a broken draft is `check`'s business, not a reason to stop adding
        for article in issue.all_articles():
            found.setdefault(pagemeta.same_link(article.url), issue.date.isoformat())
    return found
