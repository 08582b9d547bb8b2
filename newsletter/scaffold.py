"""New things from skeletons: a whole workspace (`init`) and this week's issue (`new`).

Neither ever overwrites a file. `init` checks every path it would write before writing
any, and each file is written beside its place and linked into it, which fails rather
than replace a file that appeared meanwhile; if anything fails, what was made is removed.

Over 400 lines: the last 160 are the skeletons themselves (the commented newsletter.yaml,
the example issue, the issue skeleton), text a new user reads first, kept as constants
beside the code that fills them in.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from newsletter.config import CONFIG_NAME, WEEKDAYS, Config, Weekday
from newsletter.errors import UsageError, WouldOverwrite

#: The email templates `init` copies into the workspace's `templates/` for editing.
EMAIL_TEMPLATES = ("email.html", "email.txt", "email.css")
DEFAULT_WEEKDAY: Weekday = "friday"
SLUG_MAX = 60


# --- dates and names ------------------------------------------------------------------------


def next_issue_date(weekday: Weekday, today: dt.date | None = None) -> dt.date:
    """The next `weekday` on or after `today`: an issue started on a Friday is that Friday's."""
    today = today or dt.date.today()
    return today + dt.timedelta(days=(WEEKDAYS.index(weekday) - today.weekday()) % 7)


# Letters that NFKD does not take apart into an ASCII letter and an accent.
_LETTERS = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "SS",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "þ": "th",
        "Þ": "TH",
        "ı": "i",
        "&": " and ",
        "'": "",
        "’": "",
    }
)


def slugify(title: str, max_length: int = SLUG_MAX) -> str:
    """`"Kim's Café & Bar"` -> `kims-cafe-and-bar`: ASCII, lowercase, words joined by hyphens.

    Latin letters lose their accents; letters with no ASCII spelling (Hangul, Cyrillic,
    Han) are dropped, and a title of nothing else becomes `issue`. Long slugs are cut at
    a word boundary.
    """
    ascii_text = (
        unicodedata.normalize("NFKD", title.translate(_LETTERS))
        .encode("ascii", "ignore")
        .decode("ascii")
    )
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > max_length:
        cut = slug[: max_length + 1]
        slug = cut.rsplit("-", 1)[0] if "-" in cut else slug[:max_length]
    return slug or "issue"


def _yaml_line(text: str) -> str:
    """`text` as one YAML scalar, quoted only when YAML needs it."""
    dumped = yaml.safe_dump(text, allow_unicode=True, width=1_000_000)
    return dumped.removesuffix("\n...\n").rstrip("\n")


def _title(title: str) -> str:
    title = title.strip()
    if not title:
        raise UsageError('give the issue a title: newsletter new "The title"')
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in title):
        raise UsageError("the title must be one line of text, without control characters")
    return title


# --- writing without ever overwriting -------------------------------------------------------


@dataclass
class _Writer:
    """Creates files that must not exist yet; `undo` removes everything it made."""

    files: list[Path] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)

    def mkdir(self, path: Path) -> None:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for folder in reversed(missing):
            folder.mkdir()
            self.dirs.append(folder)

    def create(self, path: Path, data: bytes) -> Path:
        self.mkdir(path.parent)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        # O_EXCL: never someone else's file; mode 0o666 less the umask, as any new file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # unlike a rename, a link never replaces a file
            except FileExistsError:
                raise WouldOverwrite(
                    f"{_shown(path)} already exists; nothing was written"
                ) from None
            except OSError:  # a file system without hard links: an exclusive create instead
                with path.open("xb") as out:
                    out.write(data)
        finally:
            tmp.unlink(missing_ok=True)
        self.files.append(path)
        return path

    def undo(self) -> None:
        for path in reversed(self.files):
            path.unlink(missing_ok=True)
        for folder in reversed(self.dirs):
            with contextlib.suppress(OSError):  # not empty: someone else's files
                folder.rmdir()


def _refuse_existing(paths: list[Path], hint: str) -> None:
    """Every path that is in the way, in one error, before anything is written."""
    paths = [_shown(p) for p in paths]
    taken = [p for p in paths if p.exists() or p.is_symlink()]
    blocked = sorted(
        {parent for p in paths for parent in p.parents if parent.exists() and not parent.is_dir()}
    )
    if taken or blocked:
        lines = [f"{p} already exists" for p in taken]
        lines += [f"{p} is a file, not a folder" for p in blocked]
        raise WouldOverwrite("\n".join(lines) + f"\nnothing was written: {hint}")


def _shown(path: Path) -> Path:
    """`path` relative to the current folder when it is below it: messages read shorter."""
    try:
        return path.relative_to(Path.cwd()) if path.is_absolute() else path
    except ValueError:
        return path


# --- newsletter init ------------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    root: Path
    created: list[Path]
    config: Path
    issue: Path
    subscribers: Path


def init_workspace(directory: Path, today: dt.date | None = None) -> Workspace:
    """A ready workspace in `directory`: settings, templates, an issue, a list, a .gitignore."""
    root = directory
    issue_date = next_issue_date(DEFAULT_WEEKDAY, today)
    issue_name = f"{issue_date.isoformat()}-welcome.yaml"
    templates = resources.files("newsletter") / "templates"
    files: dict[Path, bytes] = {
        root / CONFIG_NAME: CONFIG_TEMPLATE.encode("utf-8"),
        **{root / "templates" / n: (templates / n).read_bytes() for n in EMAIL_TEMPLATES},
        root / "issues" / issue_name: EXAMPLE_ISSUE.format(date=issue_date).encode("utf-8"),
        root / "subscribers.csv": SUBSCRIBERS.encode("utf-8"),
        root / ".gitignore": GITIGNORE.encode("utf-8"),
    }
    _refuse_existing(list(files), "move these away, or choose another folder")
    writer = _Writer()
    try:
        writer.mkdir(root)
        for path, data in files.items():
            writer.create(path, data)
    except OSError as exc:
        writer.undo()
        raise UsageError(
            f"{exc.filename or root}: cannot write here ({exc.strerror}); nothing was kept"
        ) from None
    except BaseException:
        writer.undo()
        raise
    return Workspace(
        root=root,
        created=writer.files,
        config=root / CONFIG_NAME,
        issue=root / "issues" / issue_name,
        subscribers=root / "subscribers.csv",
    )


# --- newsletter new -------------------------------------------------------------------------


@dataclass(frozen=True)
class NewIssue:
    path: Path
    date: dt.date
    warnings: list[str]


def new_issue(
    config: Config, title: str, *, date: dt.date | None = None, today: dt.date | None = None
) -> NewIssue:
    """`issues/<date>-<slug>.yaml` from the skeleton, dated the next publication day."""
    title = _title(title)
    date = date or next_issue_date(config.settings.schedule.weekday, today)
    path = config.issues_dir / f"{date.isoformat()}-{slugify(title)}.yaml"
    text = ISSUE_SKELETON.format(title=_yaml_line(title), date=date.isoformat(), path=path.name)
    _refuse_existing([path], "edit that issue, or give another title or --date")
    writer = _Writer()
    try:
        writer.create(path, text.encode("utf-8"))
    except OSError as exc:
        writer.undo()
        raise UsageError(f"{path.parent}: cannot write here ({exc.strerror})") from None
    except BaseException:
        writer.undo()
        raise
    same_day = sorted(
        p.name for p in config.issues_dir.glob(f"{date.isoformat()}-*.yaml") if p != path
    )
    warnings = [f"issues/{name} is dated {date} too" for name in same_day]
    return NewIssue(path=path, date=date, warnings=warnings)


# --- the skeletons --------------------------------------------------------------------------

CONFIG_TEMPLATE = """\
# The settings of this newsletter. `newsletter` uses the newsletter.yaml in the current
# folder or the nearest folder above it. Every setting is here; an empty value means
# "not set" and takes the default written beside it.
#
# Secrets never go in this file (so it can be committed and shared); they come from the
# environment:
#   NEWSLETTER_SECRET  signs the unsubscribe link in every mail. Required for smtp and
#                      sendgrid sends. Make one with `openssl rand -hex 32` and keep it
#                      the same for good: changing it breaks the links in past mail.
#   SENDGRID_API_KEY   the SendGrid API key, with the Mail Send permission.
#   SENDGRID_API_HOST  another SendGrid API host, e.g. https://api.eu.sendgrid.com
#   SMTP_PASSWORD      the SMTP password.
#   SMTP_HOST, SMTP_PORT, SMTP_USER, SMTP_SECURITY override smtp: below, and
#   NEWSLETTER_PROVIDER overrides provider:.

# Required: the newsletter's name, shown in every issue and on the archive.
name: My Newsletter

# Required: who the mail comes from. Put your own address: example.org is a placeholder.
from:
  email: newsletter@example.org
  name:                               # the sender's display name; empty: `name` above

# Where replies go; empty: from.email.
reply_to:

# Required: your postal address. The law in many countries wants it in every mail.
postal_address: My Newsletter, 1 Example Street, Springfield, EX 12345, USA

# The public address of the web archive (`newsletter archive` builds it into site/).
# With it, every mail links to <web_base_url>/<issue>.html and the archive gets feeds.
web_base_url:

# How readers unsubscribe: every mail carries a link and a List-Unsubscribe header.
unsubscribe:
  # An https page that takes ?token=...; empty: <web_base_url>/unsubscribe when that is
  # https, and otherwise each mail's unsubscribe link is a mailto.
  url:
  # The address unsubscribe mails go to; empty: reply_to, else from.email.
  mailto:

# The list's RFC 2919 List-Id, which mail clients filter on; empty: <name-slug>.<from
# domain>. Unsubscribe links are signed with it: set it once and keep it.
list_id:

# How mail goes out when no --provider is given: outbox (a Maildir folder; no account
# needed, nothing leaves this machine), smtp or sendgrid.
provider: outbox

# A folder of templates that override the packaged defaults (email.html, email.txt,
# email.css, archive/...); a template missing here falls back to the default.
templates: templates

# The outbox folder (a Maildir any mail client opens).
outbox: outbox

# The ledger of who got which issue, and the send locks. Keep it and back it up: without
# it, a rerun cannot know who already has an issue.
state_dir: .newsletter

# When issues come out: `newsletter new` dates a new issue on the next such day.
schedule:
  weekday: friday                     # monday ... sunday

# The time zone `newsletter send --at "2026-12-04 08:00"` reads a time in, an IANA name
# such as Europe/Berlin or America/New_York; empty: this machine's.
timezone:

# The reader service (`newsletter serve`: unsubscribe page, signups, SendGrid's webhook).
service:
  url:                                # its public https address; empty: no service

# The feeds you follow, RSS or Atom: `newsletter add --from-feeds` adds their entries
# since the last sent issue to the next issue. Uncomment and put your own:
sources:
  # - https://www.example.org/world/rss.xml
  # - https://news.example.net/feeds/atom

# The newsletter's language, a Babel locale (en, de, es, he, pt_BR, ...): dates, the
# templates' fixed words and the text direction (rtl for Hebrew or Arabic) follow it.
language: en

# Change any fixed word of the templates: greeting, greeting_fallback, view_in_browser,
# view_in_browser_short, receiving, unsubscribe, date_format (a CLDR pattern); e.g.
#   greeting: Hello
words:

# The SendGrid provider (its key comes from SENDGRID_API_KEY).
sendgrid:
  category: newsletter                # the category every message is tagged with
  asm_group_id:                       # a SendGrid unsubscribe group; empty: none
  batch_size: 1000                    # recipients per request, at most 1000
  concurrent_requests: 4              # requests out at once, 1-16
  rate_limit:                         # your plan's cap, e.g. 600/min or 50000/day; empty: none

# The SMTP provider (its password comes from SMTP_PASSWORD).
smtp:
  host: localhost                     # the mail server
  port:                               # empty: 465 for ssl, 587 for starttls, 25 for none
  security: starttls                  # starttls, ssl or none
  user:                               # the login; empty: no login
  timeout: 30                         # seconds to wait for the server
  connections: 4                      # connections open at once, 1-32 (16 for a distant relay)
  rate_limit:                         # the relay's cap, e.g. 10/s or 50000/day; empty: none

# Returned mail, read by `newsletter bounces MAILBOX` (an IMAP password comes from
# NEWSLETTER_IMAP_PASSWORD).
bounces:
  address:                            # the SMTP return path; empty: from.email
  verp: false                         # a signed return path per recipient and issue
  soft_limit: 3                       # soft bounces in a row, across issues, that suppress
"""

EXAMPLE_ISSUE = """\
# An example issue, made by `newsletter init`: edit it, or start the next one with
# `newsletter new "Title"`. The README describes every field.
title: Welcome
date: {date}
subject: "Welcome: what this newsletter is about"
preheader: A short welcome, and how each issue is put together.
intro: |
  Welcome! This is an example issue. Replace this text with your own: the intro and
  every summary are Markdown, so **bold**, _italics_ and links work.
articles:
  - headline: Markdown in a few minutes
    source: CommonMark
    summary: |
      Each story is a headline, a short summary and a link. The
      [CommonMark reference](https://commonmark.org/help/) shows all the Markdown a
      summary can use.
    url: https://commonmark.org/help/
    link_text: Read the Markdown reference
"""

ISSUE_SKELETON = """\
# Fill in every TODO; `newsletter check issues/{path}` lists what is left.
# Summaries and the intro are Markdown: **bold**, _italics_, [text](https://...).
title: {title}
date: {date}
subject: "TODO: the subject line, 10 to 78 characters"
preheader: "TODO: one line that inboxes show after the subject"
intro: |
  TODO: a few sentences that open the issue.
articles:
  - headline: "TODO: the first story's headline"
    summary: |
      TODO: two or three sentences on the story.
    url: https://example.org/TODO
    # source: The Publication          # optional: shown above the headline
    # link_text: Read the report      # optional: default words.read_more, "Read More"
    # image:                          # optional
    #   url: https://...
    #   alt: what the picture shows
"""

SUBSCRIBERS = """\
email,name,tags,status
you@example.com,Your Name,news,subscribed
"""

GITIGNORE = """\
# Made by newsletter: rebuilt by a command, or state kept on this machine only.
build/
site/
outbox/
.newsletter/
"""
