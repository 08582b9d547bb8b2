"""The archive's feeds and shared links: drafts stay out of feeds, a corrected issue
refreshes, pages carry OpenGraph/Twitter cards, image sizes and an icon."""

from __future__ import annotations

import datetime as dt
import struct
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import lxml.html
import pytest

from newsletter.config import Config, load_config
from newsletter.web.archive import build_archive
from tests.workspace import make_workspace, write_issue

BASE = "https://brief.example.org"
ATOM = "{http://www.w3.org/2005/Atom}"
CONFIG = f"""\
name: the Weekly Brief
from: {{email: brief@example.org}}
postal_address: 1 Example Street, Springfield
web_base_url: {BASE}
"""
TODAY = dt.date(2025, 8, 20)
PICTURE = """\
title: A picture
subject: A picture, this week
preheader: One story with a picture.
articles:
  - headline: The bridge
    summary: It opened.
    url: https://news.example.net/bridge
    image:
      url: https://img.example.net/bridge.jpg
      alt: The bridge at dusk
      width: 1200
      height: 675
"""
PLAIN = """\
title: Plain
subject: Plain, this week
articles:
  - headline: Words only
    summary: No picture.
    url: https://news.example.net/words
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    root = make_workspace(tmp_path / "ws", config=CONFIG)
    write_issue(root, "2025-08-15-picture.yaml", PICTURE)
    write_issue(root, "2025-08-08-plain.yaml", PLAIN)
    write_issue(root, "2025-09-01-future.yaml", PLAIN.replace("Plain", "Future"))
    return load_config(root / "newsletter.yaml", env={})


def atom(config: Config) -> ET.Element:
    return ET.parse(config.root / "site" / "feed.xml").getroot()


def page(config: Config, name: str) -> lxml.html.HtmlElement:
    return lxml.html.fromstring((config.root / "site" / name).read_bytes())


def test_drafts_never_go_into_the_feeds(config: Config) -> None:
    result = build_archive(config, drafts=True, today=TODAY)
    assert "2025-09-01-future" in result.drafts
    assert (config.root / "site" / "2025-09-01-future.html").is_file()
    feed = atom(config)
    titles = [e.findtext(f"{ATOM}title") for e in feed.iter(f"{ATOM}entry")]
    assert titles == ["A picture", "Plain", "North Korea"]
    # the feed's own time is not moved into the future by a draft
    assert feed.findtext(f"{ATOM}updated") == "2025-08-15T12:00:00Z"
    rss = (config.root / "site" / "rss.xml").read_text("utf-8")
    assert "Future" not in rss


def test_a_corrected_issue_gets_a_new_updated_time_and_an_unchanged_one_keeps_it(
    config: Config,
) -> None:
    first = dt.datetime(2025, 8, 20, 9, 0, tzinfo=dt.UTC)
    build_archive(config, today=TODAY, now=first)
    entries = {e.findtext(f"{ATOM}title"): e for e in atom(config).iter(f"{ATOM}entry")}
    assert entries["A picture"].findtext(f"{ATOM}updated") == "2025-08-15T12:00:00Z"

    path = config.issues_dir / "2025-08-15-picture.yaml"
    path.write_text(path.read_text("utf-8").replace("It opened.", "It opened on Monday."))
    corrected = dt.datetime(2025, 8, 21, 7, 30, tzinfo=dt.UTC)
    build_archive(config, today=TODAY, now=corrected)
    feed = atom(config)
    entries = {e.findtext(f"{ATOM}title"): e for e in feed.iter(f"{ATOM}entry")}
    assert entries["A picture"].findtext(f"{ATOM}updated") == "2025-08-21T07:30:00Z"
    assert entries["A picture"].findtext(f"{ATOM}published") == "2025-08-15T12:00:00Z"
    assert entries["Plain"].findtext(f"{ATOM}updated") == "2025-08-08T12:00:00Z"
    assert feed.findtext(f"{ATOM}updated") == "2025-08-21T07:30:00Z"

    # a later build with nothing changed keeps the correction's time
    build_archive(config, today=TODAY, now=corrected + dt.timedelta(days=3))
    entries = {e.findtext(f"{ATOM}title"): e for e in atom(config).iter(f"{ATOM}entry")}
    assert entries["A picture"].findtext(f"{ATOM}updated") == "2025-08-21T07:30:00Z"


def test_pages_carry_opengraph_and_twitter_cards(config: Config) -> None:
    build_archive(config, today=TODAY)
    doc = page(config, "2025-08-15-picture.html")

    def meta(key: str) -> list[str]:
        return doc.xpath(f"//meta[@property='{key}' or @name='{key}']/@content")

    assert meta("og:title") == ["A picture"]
    assert meta("og:type") == ["article"]
    assert meta("og:description") == ["One story with a picture."]
    assert meta("og:url") == [f"{BASE}/2025-08-15-picture.html"]
    assert meta("og:image") == ["https://img.example.net/bridge.jpg"]
    assert meta("og:image:alt") == ["The bridge at dusk"]
    assert meta("og:image:width") == ["1200"] and meta("og:image:height") == ["675"]
    assert meta("og:site_name") == ["the Weekly Brief"]
    assert meta("twitter:card") == ["summary_large_image"]
    plain = page(config, "2025-08-08-plain.html")
    assert plain.xpath("//meta[@name='twitter:card']/@content") == ["summary"]
    assert not plain.xpath("//meta[@property='og:image']")
    index = page(config, "index.html")
    assert index.xpath("//meta[@property='og:url']/@content") == [f"{BASE}/"]


def test_images_carry_their_size_where_known(config: Config) -> None:
    build_archive(config, today=TODAY)
    (img,) = page(config, "2025-08-15-picture.html").xpath("//img")
    assert (img.get("width"), img.get("height")) == ("1200", "675")
    assert "1200" in (config.root / "site" / "feed.xml").read_text("utf-8")


def read_ico(data: bytes) -> list[tuple[int, int, bytes]]:
    """The images of an ICO file (width, height, PNG bytes), by its header and directory."""
    reserved, kind, count = struct.unpack_from("<HHH", data, 0)
    assert (reserved, kind) == (0, 1) and count >= 1
    images = []
    for i in range(count):
        width, height, _, _, planes, bits, size, offset = struct.unpack_from(
            "<BBBBHHII", data, 6 + 16 * i
        )
        assert planes in (0, 1) and bits == 32 and offset + size <= len(data)
        images.append((width or 256, height or 256, data[offset : offset + size]))
    return images


def test_every_page_names_icons_that_exist_and_the_ico_is_one(config: Config) -> None:
    """Browsers, feed readers and link previews ask for /favicon.ico whatever a page names,
    so the site has one beside the SVG icon, and the pages name both."""
    build_archive(config, today=TODAY)
    site = config.root / "site"
    for name in ("index.html", "2025-08-15-picture.html"):
        hrefs = page(config, name).xpath("//link[@rel='icon']/@href")
        assert hrefs == ["favicon.ico", "favicon.svg"]
        assert all((site / href).is_file() for href in hrefs)
    icon = ET.parse(site / "favicon.svg").getroot()
    assert icon.tag == "{http://www.w3.org/2000/svg}svg"
    assert "".join(icon.itertext()) == "T"
    ((width, height, png),) = read_ico((site / "favicon.ico").read_bytes())
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    # the PNG's own header agrees with the ICO's directory, and its chunks are whole
    assert png[12:16] == b"IHDR" and struct.unpack(">II", png[16:24]) == (width, height) == (32, 32)
    assert zlib.crc32(png[12:29]) == struct.unpack(">I", png[29:33])[0]
    (length,) = struct.unpack(">I", png[33:37])
    assert png[37:41] == b"IDAT" and len(zlib.decompress(png[41 : 41 + length])) == 32 * 129
    assert png.endswith(b"IEND\xaeB`\x82")
