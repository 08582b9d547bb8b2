"""The mail's layout holds with long URLs and words, and its details read right: first-name
greeting, section headings, images with sizes and alt text, a text part numbered throughout."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from lxml import html as lxml_html

from newsletter.config import load_config
from newsletter.content.check import preflight
from newsletter.content.issue import load_issue
from newsletter.content.render import render_issue
from newsletter.delivery.message import sample_recipient
from tests.workspace import SAMPLE, make_workspace

LONG = Path(__file__).parent / "data" / "issues" / "2025-09-05-long-links.yaml"
LONG_URL = "https://procurement.example.net/tenders/2025/09/regional-bridge-maintenance-lot4"
#: What lets a cell shrink below its longest word: both change a cell's minimum width.
WRAPPING = ("overflow-wrap:anywhere", "word-break:break-word")


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = make_workspace(tmp_path / "ws")
    shutil.copy(LONG, root / "issues" / LONG.name)
    return root


def rendered(ws: Path, issue_name: str = LONG.name, **fields: str) -> tuple[str, str]:
    config = load_config(ws / "newsletter.yaml")
    result = render_issue(load_issue(ws / "issues" / issue_name), config)
    return result.personalise(sample_recipient(config).fields | fields)


def _style(element: lxml_html.HtmlElement) -> str:
    return str(element.get("style") or "").replace(" ", "")


def test_the_test_issue_has_what_breaks_layouts() -> None:
    text = LONG.read_text("utf-8")
    assert len(LONG_URL) == 80 and LONG_URL in text
    assert re.search(r"\w{60,}", text)


def test_no_text_cell_can_be_widened_by_an_unbreakable_run(ws: Path) -> None:
    page, _ = rendered(ws)
    tree = lxml_html.fromstring(page.encode("utf-8"))
    cells = [td for td in tree.iter("td") if td.find(".//td") is None]
    text_cells = [td for td in cells if "".join(td.itertext()).strip()]
    assert len(text_cells) >= 8
    for td in text_cells:
        style = _style(td)
        # the button's cell holds only its short label, and Word pads it
        if "button-cell" in (td.get("class") or ""):
            continue
        for rule in WRAPPING:
            assert rule in style, (td.get("class"), "".join(td.itertext())[:60], style)
        # no descendant may switch wrapping off again
        for child in td.iter():
            assert "white-space:nowrap" not in _style(child)
            assert "word-break:keep-all" not in _style(child)


def test_a_bare_url_becomes_a_link(ws: Path) -> None:
    page, text = rendered(ws)
    assert f'<a href="{LONG_URL}"' in page
    assert LONG_URL in text


def test_check_warns_about_runs_a_phone_cannot_fit(ws: Path) -> None:
    config = load_config(ws / "newsletter.yaml")
    issue = load_issue(ws / "issues" / LONG.name)
    findings = preflight(issue, render_issue(issue, config), config)
    runs = [f for f in findings if "without a space" in f.message]
    assert {f.field for f in runs} >= {
        "intro",
        "sections[0].articles[0].summary",
        "sections[0].articles[1].headline",
        "sections[0].articles[1].summary",
    }
    assert all(f.level == "warning" for f in runs)
    # a link with words hides its URL: no warning for the procurement summary
    assert "sections[1].articles[0].summary" not in {f.field for f in runs}


def test_sections_are_headings_with_room_and_headlines_nest_under_them(ws: Path) -> None:
    page, _ = rendered(ws)
    tree = lxml_html.fromstring(page.encode("utf-8"))
    titles = tree.find_class("section-title")
    assert [t.tag for t in titles] == ["h2", "h2"]
    assert "padding:34px" in _style(titles[0].getparent())
    assert {h.tag for h in tree.find_class("headline")} == {"h3"}


def test_images_keep_their_width_and_alt_text_and_no_height(ws: Path) -> None:
    page, text = rendered(ws)
    img = re.search(r"<img [^>]*>", page)
    assert img is not None
    # width for Outlook, which scales the height to it; no height attribute: Yahoo ignores
    # CSS height, so one would stretch the picture on a phone, and in Chromium it holds the
    # cell at 536 px through the image's aspect ratio
    assert 'width="536"' in img.group(0) and "height" not in img.group(0)
    assert 'alt="The new bridge at dusk, with its arches lit"' in img.group(0)
    assert 'height="auto"' not in page
    assert "[Image: The new bridge at dusk, with its arches lit]" in text


@pytest.mark.parametrize(
    ("fields", "greeting"),
    [
        ({"first_name": "Katherine", "name": "Johnson, Katherine"}, "Hi Katherine,"),
        ({"first_name": "", "name": "Johnson, Katherine"}, "Hi Katherine,"),
        ({"first_name": "", "name": "Ada Lovelace"}, "Hi Ada Lovelace,"),
        ({"first_name": "  ", "name": ""}, "Hi there,"),
    ],
)
def test_the_greeting_prefers_the_first_name_and_falls_back_cleanly(
    ws: Path, fields: dict[str, str], greeting: str
) -> None:
    page, text = rendered(ws, **fields)
    assert f">{greeting}</p>" in page
    assert f"\n{greeting}\n" in text


def test_the_text_part_numbers_across_sections_and_wraps_long_titles(ws: Path) -> None:
    _, text = rendered(ws)
    numbers = re.findall(r"^(\d+)\.  ", text, re.M)
    assert numbers == ["1", "2", "3"]
    for line in text.splitlines():  # over 72 only where one word is longer by itself
        assert len(line) <= 72 or len(line.split()) == 1 or "token=" in line, line
    assert "The week in infrastructure, procurement and the\nVerwaltungsgerichtsbarkeit" in text


def test_the_preheader_hides_without_a_colour_trick_and_fills_the_preview(ws: Path) -> None:
    page, _ = rendered(ws, issue_name=Path(SAMPLE).name)
    div = re.search(r'<div class="preheader" style="([^"]*)">(.*?)</div>', page, re.S)
    assert div is not None
    assert "color" not in div.group(1)  # SpamAssassin's HTML_FONT_LOW_CONTRAST
    filler = div.group(2).split("more.", 1)[1]
    assert filler.count("\u034f") >= 100  # inboxes show up to ~140 characters


def test_outlook_gets_a_fixed_width_and_its_own_settings(ws: Path) -> None:
    page, _ = rendered(ws)
    assert re.search(r"<!--\[if mso\]><table [^>]*width=\"600\"", page)
    assert "<o:PixelsPerInch>96</o:PixelsPerInch>" in page
    assert page.count("<!--[if mso]>") == page.count("<![endif]-->") == 3
    assert "mso-line-height-rule:exactly" in page
    assert re.search(r'<td class="button-cell"[^>]*bgcolor="#1d5fa8"[^>]*mso-padding-alt', page)
    assert 'name="format-detection" content="telephone=no, date=no, address=no' in page
