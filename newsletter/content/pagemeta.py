"""What a news page says about itself: headline, teaser, image, site name, canonical URL.

Pages describe themselves for link previews, and `newsletter add` reads the same tags,
trusting them in this order: OpenGraph (`og:*`), Twitter cards (`twitter:*`), JSON-LD
(`NewsArticle` and its kin), then `<title>` and `<meta name=description>`. The stdlib's
`html.parser` reads the page: it never runs anything and copes with broken markup.

Everything found is text: entities are decoded, whitespace is collapsed to one line,
control characters are dropped, and headlines and teasers are cut at a word to lengths
an issue can carry. Tracking parameters (`utm_*`, `fbclid`, ...) are stripped from URLs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

HEADLINE_MAX = 150
SUMMARY_MAX = 400
SOURCE_MAX = 80
ALT_MAX = 200

#: Query parameters that say who sent the reader, not which page it is.
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "twclid",
        "igshid",
        "mc_cid",
        "mc_eid",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "oly_anon_id",
        "oly_enc_id",
        "rb_clickid",
        "s_cid",
        "vero_id",
        "wt_mc",
        "ref_src",
        "cmpid",
        "at_medium",
        "at_campaign",
        "ito",
        "ncid",
        "sr_share",
        "smid",
        "guccounter",
    }
)
_TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "__hs", "hsa_")
_ARTICLE_TYPES = frozenset(
    {
        "NewsArticle",
        "Article",
        "ReportageNewsArticle",
        "AnalysisNewsArticle",
        "OpinionNewsArticle",
        "BackgroundNewsArticle",
        "BlogPosting",
        "Report",
        "WebPage",
    }
)
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\ufeff]")


@dataclass(frozen=True)
class PageMeta:
    """What the page says about itself; any of it may be missing."""

    headline: str | None
    summary: str | None
    image_url: str | None
    image_alt: str | None
    site_name: str | None
    canonical_url: str | None
    paywalled: bool = False


def clean_url(url: str) -> str:
    """`url` without tracking parameters or a #fragment, scheme and host in lowercase."""
    parts = urlsplit(url.strip())
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key.lower() not in TRACKING_PARAMS and not key.lower().startswith(_TRACKING_PREFIXES)
    ]
    kept = parts.query if len(query) == len(parse_qsl(parts.query, keep_blank_values=True)) else ""
    return urlunsplit(
        (
            parts.scheme.lower(),
            parts.netloc.lower(),
            parts.path or "/",
            kept or urlencode(query),
            "",
        )
    )


def same_link(url: str) -> str:
    """The key two links are compared by: clean, and `http`, `www.` and a final `/` ignored."""
    parts = urlsplit(clean_url(url))
    host = parts.netloc.removeprefix("www.")
    return urlunsplit(("", host, parts.path.rstrip("/"), parts.query, ""))


def text(value: object, limit: int | None = None) -> str | None:
    """One line of plain text from what a page gave, cut at a word to `limit`; None if empty."""
    if not isinstance(value, str):
        return None
    value = " ".join(_INVISIBLE.sub(" ", value).split())
    if not value:
        return None
    if limit is not None and len(value) > limit:
        cut = value[: limit - 1]
        cut = cut.rsplit(" ", 1)[0] if " " in cut else cut
        value = cut.rstrip(" ,;:.-–—") + "…"
    return value


def page_meta(html: str, page_url: str) -> PageMeta:
    """Read a page's own description of itself; `page_url` resolves relative links."""
    parser = _Head()
    parser.feed(html)
    parser.close()
    meta, ld = parser.meta, _article(parser.json_ld)

    def first(*values: object, limit: int | None = None) -> str | None:
        for value in values:
            if found := text(value, limit):
                return found
        return None

    image_url, image_alt = _image(meta, ld, page_url)
    site = first(meta.get("og:site_name"), _name(ld.get("publisher")), meta.get("application-name"))
    title = parser.title
    if title and site:  # "Headline | Site" or "Headline - Site": the site is said elsewhere
        for sep in (" | ", " - ", " – ", " — ", " :: "):
            if title.endswith(sep + site):
                title = title[: -len(sep + site)]
    canonical = _http(meta.get("og:url"), page_url) or _http(parser.canonical, page_url)
    return PageMeta(
        headline=first(
            meta.get("og:title"),
            meta.get("twitter:title"),
            ld.get("headline"),
            ld.get("name"),
            title,
            limit=HEADLINE_MAX,
        ),
        summary=first(
            meta.get("og:description"),
            meta.get("twitter:description"),
            ld.get("description"),
            meta.get("description"),
            limit=SUMMARY_MAX,
        ),
        image_url=image_url,
        image_alt=text(image_alt, ALT_MAX),
        site_name=text(site, SOURCE_MAX),
        canonical_url=clean_url(canonical) if canonical else None,
        paywalled=ld.get("isAccessibleForFree") in (False, "False", "false"),
    )


def _http(value: object, base: str) -> str | None:
    """An absolute http(s) URL from `value` (maybe relative to `base`), or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    url = urljoin(base, value.strip())
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    if any(c.isspace() or not c.isprintable() for c in url):
        return None
    return url


def _image(meta: dict[str, str], ld: dict[str, Any], base: str) -> tuple[str | None, str | None]:
    for key, alt in (
        ("og:image:secure_url", "og:image:alt"),
        ("og:image", "og:image:alt"),
        ("og:image:url", "og:image:alt"),
        ("twitter:image", "twitter:image:alt"),
        ("twitter:image:src", "twitter:image:alt"),
    ):
        if url := _http(meta.get(key), base):
            return url, meta.get(alt)
    image = ld.get("image")
    if isinstance(image, list) and image:
        image = image[0]
    if isinstance(image, dict):
        if url := _http(image.get("url") or image.get("contentUrl"), base):
            return url, image.get("caption") if isinstance(image.get("caption"), str) else None
    elif url := _http(image, base):
        return url, None
    return None, None


def _name(value: object) -> str | None:
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, dict):
        name = value.get("name")
        return name if isinstance(name, str) else None
    return None


def _article(blocks: list[str]) -> dict[str, Any]:
    """The first JSON-LD object that is an article (top level, in a list, or in @graph)."""
    for block in blocks:
        try:
            data = json.loads(block)
        except ValueError:
            continue
        stack = data if isinstance(data, list) else [data]
        for item in stack:
            if not isinstance(item, dict):
                continue
            if isinstance(item.get("@graph"), list):
                stack.extend(item["@graph"])
            kind = item.get("@type")
            kinds = kind if isinstance(kind, list) else [kind]
            if any(k in _ARTICLE_TYPES for k in kinds if isinstance(k, str)):
                return item
    return {}


class _Head(HTMLParser):
    """Collects <meta>, <link rel=canonical>, <title> and JSON-LD blocks; ignores the rest."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.canonical: str | None = None
        self.json_ld: list[str] = []
        self._title: list[str] | None = None
        self.title: str | None = None
        self._script: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): v or "" for k, v in attrs}
        if tag == "meta":
            key = (values.get("property") or values.get("name") or "").strip().lower()
            if key and "content" in values:
                self.meta.setdefault(key, values["content"])  # the first one counts
        elif tag == "link" and "canonical" in values.get("rel", "").lower().split():
            self.canonical = self.canonical or values.get("href")
        elif tag == "title" and self.title is None and self._title is None:
            self._title = []
        elif tag == "script" and values.get("type", "").strip().lower() == "application/ld+json":
            self._script = []

    def handle_data(self, data: str) -> None:
        if self._title is not None:
            self._title.append(data)
        if self._script is not None:
            self._script.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._title is not None:
            self.title, self._title = "".join(self._title), None
        elif tag == "script" and self._script is not None:
            self.json_ld.append("".join(self._script))
            self._script = None
