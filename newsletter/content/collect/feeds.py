"""RSS and Atom feeds: the entries published since a given time, as links to add.

feedparser reads the feed from bytes we fetched ourselves (so the same address checks
apply), and copes with every RSS and Atom dialect in the wild. Only each entry's link and
date are used: the page itself is fetched for the article, like any other link.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from typing import Any

import feedparser

from newsletter.errors import FetchError


@dataclass(frozen=True)
class Entry:
    """One item of a feed: where it links, its title, and when it was published."""

    url: str
    title: str | None
    published: dt.datetime | None


def entries(body: bytes, feed_url: str, content_type: str = "") -> list[Entry]:
    """The linked entries of a feed, in the feed's order; raise `FetchError` if it is none."""
    headers = {"content-location": feed_url}
    if content_type:
        headers["content-type"] = content_type
    parsed: Any = feedparser.parse(body, response_headers=headers)
    if not parsed.entries and (parsed.bozo or not parsed.get("version")):
        raise FetchError("not an RSS or Atom feed")
    found = []
    for item in parsed.entries:
        link = item.get("link")
        if not isinstance(link, str) or not link.strip():
            continue
        when = item.get("published_parsed") or item.get("updated_parsed")
        published = dt.datetime.fromtimestamp(calendar.timegm(when), dt.UTC) if when else None
        title = item.get("title")
        found.append(Entry(link.strip(), title if isinstance(title, str) else None, published))
    return found


def since(found: list[Entry], start: dt.datetime) -> list[Entry]:
    """The entries published at or after `start`; undated ones too (duplicates are caught)."""
    return [e for e in found if e.published is None or e.published >= start]
