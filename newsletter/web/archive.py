"""The web archive: every published issue as a page, an index, and Atom and RSS feeds.

    load every issues/*.yaml -> choose the published ones -> render pages and feeds
    (pure: values in, file contents out) -> publish the folder in one swap

An issue is published once the ledger says someone received it, or once its date is
past; `--drafts` adds the rest, marked as drafts on the pages and never in the feeds.
An entry's `updated` time is the moment a build first saw its current content (a hash
kept in the site's UPDATES file), so a corrected issue shows again in feed readers.
The page of an issue is `<issue-id>.html`, the name every mail's "view in browser" link points at
(`Config.issue_url`). The site is built in a fresh folder beside the target and swapped
in, so a failed build leaves the previous site whole. It replaces only a folder that it
made itself: one holding files it did not write is refused.

Over 400 lines: the choice of what is published, the pages and the feeds share one model of
an entry; the markup itself is in templates/archive/.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2

from newsletter import __version__
from newsletter.config import Config
from newsletter.content import markup
from newsletter.content.issue import Image, Issue, load_issue
from newsletter.content.language import Language
from newsletter.content.render import IssueView, _render, environment
from newsletter.errors import IssueError, Problem, TemplateError, UsageError
from newsletter.storage.store import existing_ledger
from newsletter.web.favicon import favicon_ico

SITE_DIR = "site"
INDEX = "index.html"
STYLE = "style.css"
ATOM = "feed.xml"
RSS = "rss.xml"
FAVICON = "favicon.svg"
#: What browsers and feed readers ask for whatever the pages name.
FAVICON_ICO = "favicon.ico"
#: Each issue's content hash and the time it was first built with it, for feed `updated`.
UPDATES = ".newsletter-updates.json"
#: Marks a folder as this module's output and lists what it wrote there.
MARKER = ".newsletter-archive"
#: Issues carry a date, not a time; noon UTC is that same date from UTC-12 to UTC+11.
PUBLISHED_AT = dt.time(12, 0, tzinfo=dt.UTC)
#: Entries in each feed, newest first: readers poll the feed, the archive keeps the rest.
FEED_ENTRIES = 20
ATOM_NS = "http://www.w3.org/2005/Atom"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


@dataclass(frozen=True)
class Entry:
    """One issue on the site."""

    issue: Issue
    sent: bool
    draft: bool
    base_url: str | None
    changed: dt.datetime | None = None
    """When a build first saw this content, if that was after the issue's publication."""
    language: Language = field(default_factory=Language)

    @property
    def id(self) -> str:
        return self.issue.id

    @property
    def page(self) -> str:
        """The file name, as `Config.issue_url` spells it."""
        return f"{self.issue.id}.html"

    @property
    def href(self) -> str:
        """The link from another page of the site."""
        return quote(self.page)

    @property
    def url(self) -> str | None:
        return f"{self.base_url}/{self.href}" if self.base_url else None

    @property
    def date_text(self) -> str:
        return IssueView(self.issue, self.language).date_text

    @property
    def published(self) -> dt.datetime:
        return dt.datetime.combine(self.issue.date, PUBLISHED_AT)

    @property
    def updated(self) -> dt.datetime:
        return max(self.published, self.changed) if self.changed else self.published

    @property
    def digest(self) -> str:
        return content_digest(self.issue)

    @property
    def image(self) -> Image | None:
        """The first article's image: the picture a shared link shows."""
        return next((a.image for a in self.issue.all_articles() if a.image), None)


@dataclass
class ArchiveResult:
    out: Path
    published: list[str] = field(default_factory=list)
    """Issue ids on the site, newest first."""
    drafts: list[str] = field(default_factory=list)
    """Of those, the ones there only because of --drafts."""
    left_out: list[str] = field(default_factory=list)
    """Issues not published yet (dated today or later, and not sent)."""
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def site_files(self) -> list[str]:
        """The files other than the issue pages: the index, the style sheet, the feeds."""
        pages = {f"{issue_id}.html" for issue_id in self.published}
        return [name for name in self.files if name not in pages and name[0] != "."]


def build_archive(
    config: Config,
    out: Path | None = None,
    *,
    drafts: bool = False,
    today: dt.date | None = None,
    now: dt.datetime | None = None,
    templates: Path | None = None,
) -> ArchiveResult:
    """Build the site into `out` (default `site/`): pages, index, style sheet and feeds."""
    out = (out if out is not None else config.root / SITE_DIR).resolve()
    issues = load_issues(config.issues_dir)
    today = today or dt.date.today()
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    sent = sent_issues(config, [i.id for i in issues], now)
    seen = previous_updates(out)
    base = config.settings.web_base_url
    base = base.rstrip("/") if base else None
    result = ArchiveResult(out=out)
    entries = []
    for issue in sorted(issues, key=lambda i: (i.date, i.id), reverse=True):
        public = issue.id in sent or issue.date < today
        if public or drafts:
            entries.append(
                Entry(
                    issue,
                    issue.id in sent,
                    not public,
                    base,
                    _changed(issue, seen, now),
                    config.language,
                )
            )
        if not public:
            (result.drafts if drafts else result.left_out).append(issue.id)
    result.published = [e.id for e in entries]
    if base is None:
        result.warnings.append(
            "web_base_url is not set in newsletter.yaml, so there are no feeds: feed "
            f"readers need absolute links ({ATOM} and {RSS} were not written)"
        )
    env = environment(templates if templates is not None else config.templates_dir)
    files = render_site(entries, config, env, feeds=base is not None)
    publish(out, files)
    result.files = list(files)
    return result


def content_digest(issue: Issue) -> str:
    return hashlib.sha256(issue.model_dump_json().encode("utf-8")).hexdigest()


def previous_updates(out: Path) -> dict[str, dict[str, str]]:
    """What the last build into `out` recorded: issue id -> its content hash and time."""
    try:
        data = json.loads((out / UPDATES).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _changed(issue: Issue, seen: Mapping[str, Any], now: dt.datetime) -> dt.datetime | None:
    """`now` if the issue's content differs from the last build's, else what it recorded."""
    before = seen.get(issue.id)
    if not isinstance(before, dict):
        return None  # first seen: updated when published
    if before.get("sha256") != content_digest(issue):
        return now
    try:
        return dt.datetime.fromisoformat(str(before.get("changed")))
    except ValueError:
        return None


def _updates_file(entries: list[Entry]) -> str:
    record = {
        e.id: {"sha256": e.digest, "changed": e.changed.isoformat() if e.changed else None}
        for e in entries
    }
    return json.dumps(record, indent=1, sort_keys=True) + "\n"


def load_issues(folder: Path) -> list[Issue]:
    """Every issue in `folder`; the problems of all invalid ones raised together."""
    issues, problems = [], []
    for found in sorted(folder.glob("*.yaml")):
        if found.name.startswith("."):
            continue
        path = _shown(found)
        try:
            issue = load_issue(path)
        except IssueError as exc:
            problems += exc.problems
            continue
        if issue.id == INDEX.removesuffix(".html"):
            problems.append(
                Problem(
                    str(path),
                    None,
                    None,
                    f"its page would replace the archive's {INDEX}; "
                    "rename the file <YYYY-MM-DD>-<slug>.yaml",
                )
            )
        issues.append(issue)
    if problems:
        raise IssueError(problems)
    return issues


def _shown(path: Path) -> Path:
    """`path` relative to the current folder when it is below it: messages read shorter."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def sent_issues(config: Config, ids: list[str], now: dt.datetime | None = None) -> set[str]:
    """The issues the ledger says someone received by `now`; one a provider still holds for
    a later time (`send --at`) is not out yet. None if nothing was ever sent here."""
    ledger = existing_ledger(config)
    if ledger is None:
        return set()
    now = now or dt.datetime.now(dt.UTC)
    with ledger:
        return {issue_id for issue_id in ids if ledger.was_delivered(issue_id, now)}


# --- rendering: values in, file contents out ------------------------------------------------


def render_site(
    entries: list[Entry], config: Config, env: jinja2.Environment, *, feeds: bool
) -> dict[str, bytes]:
    """Every file of the site by name; `entries` newest first."""
    s = config.settings
    common: dict[str, Any] = {
        "newsletter": {
            "name": s.name,
            "language": config.language.tag,
            "direction": config.language.direction,
            "web_base_url": s.web_base_url,
            "subscribe_url": config.subscribe_url,
        },
        "words": config.language.words,
        "feeds": {"atom": ATOM, "rss": RSS} if feeds else None,
        "index": INDEX,
        "style": STYLE,
        "favicon": FAVICON,
        "favicon_ico": FAVICON_ICO,
    }
    files: dict[str, str | bytes] = {
        INDEX: _render(env, "archive/index.html", {**common, "entries": entries}),
        STYLE: _source(env, "archive/style.css"),
        FAVICON: _render(env, "archive/favicon.svg", common),
        FAVICON_ICO: favicon_ico(),
        UPDATES: _updates_file(entries),
    }
    for i, entry in enumerate(entries):
        files[entry.page] = _render(
            env,
            "archive/issue.html",
            {
                **common,
                "entry": entry,
                "issue": IssueView(entry.issue, config.language),
                "in_feed": False,
                "newer": entries[i - 1] if i > 0 else None,
                "older": entries[i + 1] if i + 1 < len(entries) else None,
            },
        )
    if feeds:
        # drafts are for the editor's eyes: a feed reader would keep them forever
        recent = [e for e in entries if not e.draft][:FEED_ENTRIES]
        bodies = {
            e.id: _render(
                env,
                "archive/body.html",
                {"issue": IssueView(e.issue, config.language), "in_feed": True},
            )
            for e in recent
        }
        files[ATOM] = atom_feed(recent, config, bodies)
        files[RSS] = rss_feed(recent, config, bodies)
    return {
        name: text.encode("utf-8") if isinstance(text, str) else text
        for name, text in files.items()
    }


def _source(env: jinja2.Environment, name: str) -> str:
    """A file from the templates folders as it is, not rendered (a style sheet)."""
    loader = env.loader
    assert loader is not None
    try:
        return loader.get_source(env, name)[0]
    except jinja2.TemplateNotFound:
        folders = ", ".join(getattr(loader, "searchpath", [])) or "the templates folder"
        raise TemplateError(f"template {name} not found in {folders}") from None


def _summary(issue: Issue) -> str | None:
    if issue.preheader:
        return issue.preheader
    return markup.to_text(issue.intro) if issue.intro else None


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _updated(entries: list[Entry]) -> dt.datetime:
    if entries:
        return max(e.updated for e in entries)
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _xml(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def atom_feed(entries: list[Entry], config: Config, bodies: Mapping[str, str]) -> str:
    """RFC 4287. Entry ids are tag URIs (RFC 4151) of the site's host, the issue's date
    and its id, so they stay the same if the site moves from http to https."""
    s = config.settings
    base = (s.web_base_url or "").rstrip("/")
    host = (urlsplit(base).hostname or "localhost").encode("idna").decode("ascii")
    ET.register_namespace("", ATOM_NS)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}", attrs)
        element.text = text
        return element

    feed = ET.Element(f"{{{ATOM_NS}}}feed", {XML_LANG: config.language.tag})
    sub(feed, "id", f"{base}/")
    sub(feed, "title", s.name)
    sub(feed, "subtitle", config.language.words["every_issue"] % s.name)
    sub(feed, "updated", _rfc3339(_updated(entries)))
    sub(feed, "link", rel="self", type="application/atom+xml", href=f"{base}/{ATOM}")
    sub(feed, "link", rel="alternate", type="text/html", href=f"{base}/")
    author = sub(feed, "author")
    sub(author, "name", s.from_.name or s.name)
    sub(feed, "generator", "newsletter", version=__version__)
    for e in entries:
        entry = sub(feed, "entry")
        sub(entry, "id", f"tag:{host},{e.issue.date.isoformat()}:{quote(e.id, safe='')}")
        sub(entry, "title", e.issue.title)
        sub(entry, "updated", _rfc3339(e.updated))
        sub(entry, "published", _rfc3339(e.published))
        sub(entry, "link", rel="alternate", type="text/html", href=e.url or e.href)
        if summary := _summary(e.issue):
            sub(entry, "summary", summary)
        sub(entry, "content", bodies[e.id], type="html")
    return _xml(feed)


def rss_feed(entries: list[Entry], config: Config, bodies: Mapping[str, str]) -> str:
    """RSS 2.0, with the atom:link to itself that feed validators ask for."""
    s = config.settings
    base = (s.web_base_url or "").rstrip("/")
    ET.register_namespace("atom", ATOM_NS)
    rss = ET.Element("rss", {"version": "2.0"})
    channel = ET.SubElement(rss, "channel")

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, tag, attrs)
        element.text = text
        return element

    sub(channel, "title", s.name)
    sub(channel, "link", f"{base}/")
    sub(channel, "description", config.language.words["every_issue"] % s.name)
    sub(channel, "language", config.language.tag)
    sub(channel, "lastBuildDate", format_datetime(_updated(entries)))
    sub(channel, "generator", f"newsletter {__version__}")
    ET.SubElement(
        channel,
        f"{{{ATOM_NS}}}link",
        {"href": f"{base}/{RSS}", "rel": "self", "type": "application/rss+xml"},
    )
    for e in entries:
        item = sub(channel, "item")
        sub(item, "title", e.issue.title)
        sub(item, "link", e.url or e.href)
        sub(item, "guid", e.url or e.href, isPermaLink="true")
        sub(item, "pubDate", format_datetime(e.published))
        sub(item, "description", bodies[e.id])
    return _xml(rss)


# --- publishing: one swap -------------------------------------------------------------------


def publish(out: Path, files: Mapping[str, bytes]) -> None:
    """Write `files` into a new folder beside `out`, then swap it in for the old one."""
    previous = _our_files(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # mkdir rather than mkdtemp: the site gets the permissions of any new folder (the
        # umask's), where mkdtemp's would be private and unreadable to a web server.
        tmp = out.with_name(f".{out.name}.new-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
    except OSError as exc:
        raise UsageError(
            f"{out.parent}: cannot write here ({exc.strerror}); choose another --out"
        ) from None
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / MARKER).write_text(_marker(files), encoding="utf-8")
        if previous is None:
            os.rename(tmp, out)
            return
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise UsageError(f"{out}: could not write the site ({exc.strerror})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _marker(files: Mapping[str, bytes]) -> str:
    return "# Made by `newsletter archive`, which replaces this folder on every build.\n" + "".join(
        f"{name}\n" for name in sorted(files)
    )


def _our_files(out: Path) -> set[str] | None:
    """What an earlier build wrote into `out` (None: no folder yet); refuse anyone else's."""
    if not out.exists() and not out.is_symlink():
        return None
    if not out.is_dir():
        raise UsageError(f"{out} is a file, not a folder; choose another --out")
    present = {p.name for p in out.iterdir()}
    if not present:
        return set()
    marker = out / MARKER
    ours = (
        {line for line in marker.read_text("utf-8").splitlines() if line and line[0] != "#"}
        if marker.is_file()
        else set()
    )
    foreign = sorted(present - ours - {MARKER})
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise UsageError(
            f"{out} holds files `newsletter archive` did not make ({shown}); it replaces "
            "the whole folder on every build, so choose an empty or new --out"
        )
    return ours
