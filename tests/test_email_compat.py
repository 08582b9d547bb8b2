"""The mail's CSS and HTML held against caniemail.com's data for Apple Mail, Gmail, Outlook
(Windows, Mac, Outlook.com, apps) and Yahoo.

tests/data/caniemail.json holds, for each feature the templates use, the latest tested
support in each of those clients. Every CSS property in email.css and email-media.css
must be in it (or named below as outside caniemail), and every gap it shows must be in
ACCEPTED_GAPS with the reason we can live with it, so a new property or a client that
stops supporting one fails here rather than in a reader's inbox. The table is
regenerated from a caniemail checkout by scripts/caniemail_table.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from newsletter.content.render import PACKAGE_TEMPLATES
from tests.workspace import SAMPLE, make_workspace

DATA = json.loads((Path(__file__).parent / "data" / "caniemail.json").read_text("utf-8"))
FEATURES: dict[str, dict[str, str]] = DATA["features"]

#: CSS property -> caniemail feature.
PROPERTIES = {
    "margin": "css-margin",
    "padding": "css-padding",
    "padding-left": "css-padding",
    "padding-right": "css-padding",
    "background-color": "css-background-color",
    "background-image": "css-background-image",
    "width": "css-width",
    "max-width": "css-max-width",
    "max-height": "css-max-height",
    "border": "css-border",
    "border-top": "css-border",
    "border-bottom": "css-border",
    "border-top-color": "css-border",
    "border-bottom-color": "css-border",
    "border-radius": "css-border-radius",
    "display": "css-display",
    "font-size": "css-font-size",
    "font-weight": "css-font-weight",
    "line-height": "css-line-height",
    "letter-spacing": "css-letter-spacing",
    "text-transform": "css-text-transform",
    "text-decoration": "css-text-decoration",
    "text-align": "css-text-align",
    "opacity": "css-opacity",
    "overflow": "css-overflow",
    "overflow-wrap": "css-overflow-wrap",
    "word-break": "css-word-break",
}
#: Properties caniemail does not track: universal basics, or one client's own switches.
OUTSIDE_CANIEMAIL = {
    "color",
    "font-family",
    "word-wrap",  # the legacy name of overflow-wrap, for older WebKit and Outlook
    "-webkit-text-size-adjust",  # iOS only: no text inflation
    "-ms-text-size-adjust",  # Windows Phone/Outlook only
    "mso-hide",  # Outlook for Windows only, as every mso-*
    "mso-line-height-rule",
    "mso-padding-alt",
}
#: Selectors, at-rules and HTML the templates rely on.
ALWAYS_USED = [
    "css-selector-class",
    "css-selector-descendant",
    "css-selector-grouping",
    "css-at-media",
    "css-important",
    "css-display-none",
    "html-table",
    "html-style",
    "html-h1-h6",
    "html-role",
    "html-lang",
    "html-dir",
    "html-align",
    "html-width",
    "html-height",
    "html-img",
    "html-aria-label",
    "html-meta-color-scheme",
    "html-span",
    "html-div",
    "html-p",
]

ALL = "*"
#: feature -> (clients where we accept a gap, or ALL, and why that is fine).
ACCEPTED_GAPS: dict[str, tuple[set[str] | str, str]] = {
    # Gmail, Outlook.com and Yahoo drop some margin values (negative, auto); we use none.
    "css-margin": (ALL, "only plain pixel margins, which every client keeps"),
    # Word ignores padding on <a> and <p>: the button pads its cell (mso-padding-alt).
    "css-padding": ({"outlook.windows"}, "padding lives on table cells"),
    # Word ignores width/max-width in CSS: the conditional 600px wrapper and width="600".
    "css-width": ({"outlook.windows"}, "width attributes and the MSO wrapper"),
    "css-max-width": ({"outlook.windows"}, "width attributes and the MSO wrapper"),
    "html-width": ({"outlook.windows"}, "only on tables, cells and images, where Word keeps it"),
    "html-height": ({"outlook.windows"}, "only on images, where Word keeps it"),
    # Square corners in Word and some Yahoo apps: looks plainer, reads the same.
    "css-border-radius": (
        {"outlook.windows", *{f"yahoo.{p}" for p in ("desktop-webmail", "ios", "android")}},
        "cosmetic",
    ),
    "css-display": (ALL, "block/inline-block only; the button is a table cell anyway"),
    "css-display-none": ({"outlook.windows"}, "the preheader also has mso-hide:all"),
    "css-max-height": ({"outlook.windows"}, "the preheader is hidden by mso-hide there"),
    "css-opacity": ({"outlook.windows"}, "the preheader is hidden by mso-hide there"),
    "css-overflow": (ALL, "the preheader's belt-and-braces only"),
    "css-line-height": ({"outlook.windows"}, "mso-line-height-rule:exactly makes Word keep it"),
    "css-letter-spacing": ({"outlook.windows"}, "cosmetic (brand and section labels)"),
    "css-text-transform": (
        {"outlook.windows"},
        "section titles are typed as the editor wrote them",
    ),
    "css-text-decoration": (ALL, "underline/none only, which every client keeps"),
    "css-text-align": (ALL, "left/center only; align attributes back it up"),
    "css-border": ({"outlook.windows"}, "Word draws solid borders; that is all we use"),
    "css-font-size": (
        {"outlook.windows", *{f"yahoo.{p}" for p in ("desktop-webmail", "ios", "android")}},
        "pixel sizes only; some keywords fail",
    ),
    "css-font-weight": (
        {"outlook.windows", *{f"yahoo.{p}" for p in ("desktop-webmail", "ios", "android")}},
        "bold only; numeric weights fail",
    ),
    # The long-URL guard: word-break:break-word is honoured by Gmail and Word; Apple Mail
    # and the Outlook apps apply it as break-all (ugly but inside the screen); Yahoo has
    # none, and overflow-wrap barely works anywhere, so a run too long for a phone is also
    # a `check` warning.
    "css-word-break": (ALL, "the widest-supported wrap, backed by `check`'s warning"),
    "css-overflow-wrap": (ALL, "kept for the clients that do honour it"),
    # Dark mode: Gmail, Yahoo and Word read no dark CSS; Gmail apps invert colours
    # themselves, Outlook.com gets [data-ogsc] rules, and the light palette is the default.
    "css-at-media-prefers-color-scheme": (ALL, "the light palette reads well by itself"),
    "html-meta-color-scheme": (ALL, "a hint only; the CSS does the work"),
    # @media: Word and some apps ignore it; the 600px layout shrinks by width:100% anyway.
    "css-at-media": (ALL, "phone tweaks only; the layout is fluid without them"),
    "css-important": (ALL, "only used to beat inline styles where media queries apply"),
    # Client-scoped overrides: each one only matters in the client that honours it.
    "css-selector-attribute": (ALL, "[data-ogsc] is for Outlook.com, which supports it"),
    "css-selector-adjacent-sibling": (ALL, "`u + .body` is for Gmail, which supports it"),
    "css-background-image": (ALL, "only the Gmail-scoped button background"),
    "css-linear-gradient": (ALL, "only the Gmail-scoped button background"),
    # Gmail's apps do not match classes in some non-Google accounts: inlined styles carry
    # the design; classes only drive the media queries.
    "css-selector-class": (ALL, "every rule is also inlined by premailer"),
    "css-selector-descendant": (ALL, "every rule is also inlined by premailer"),
    "css-selector-grouping": (ALL, "every rule is also inlined by premailer"),
    "html-style": (ALL, "Gmail and Word keep <style> but drop some rules; inline styles rule"),
    "html-role": (ALL, "presentation role is a screen-reader hint"),
    "html-lang": (ALL, "Yahoo moves lang; screen readers fall back to the user's language"),
    "html-dir": (
        {"outlook.windows"},
        "rtl text still reads right to left in Word; a dir=auto paragraph takes the page's",
    ),
    "html-align": (ALL, "CSS text-align backs it up"),
    "html-aria-label": (ALL, "the button text says what it does without the label"),
}


def _css_properties() -> set[str]:
    found: set[str] = set()
    for name in ("email.css", "email-media.css"):
        css = (PACKAGE_TEMPLATES / name).read_text("utf-8")
        css = re.sub(r"/\*.*?\*/|\{#.*?#\}", "", css, flags=re.S)
        for block in re.findall(r"\{([^{}]*)\}", css):
            found |= {m.strip().lower() for m in re.findall(r"([-\w]+)\s*:", block)}
    return found


def _used_features() -> set[str]:
    used = set(ALWAYS_USED)
    for prop in _css_properties():
        if prop in PROPERTIES:
            used.add(PROPERTIES[prop])
    media = (PACKAGE_TEMPLATES / "email-media.css").read_text("utf-8")
    if "prefers-color-scheme" in media:
        used.add("css-at-media-prefers-color-scheme")
    if "[data-" in media or "[x-apple" in media:
        used.add("css-selector-attribute")
    if " + " in media:
        used.add("css-selector-adjacent-sibling")
    if "linear-gradient" in media:
        used |= {"css-linear-gradient", "css-background-image"}
    return used


def _gaps(feature: str) -> set[str]:
    return {client for client, value in FEATURES[feature].items() if value != "y"}


def test_every_css_property_is_looked_up_in_caniemail() -> None:
    unknown = sorted(_css_properties() - PROPERTIES.keys() - OUTSIDE_CANIEMAIL)
    assert not unknown, f"look these up on caniemail.com and add them to the table: {unknown}"
    missing = sorted(f for f in _used_features() if f not in FEATURES)
    assert not missing, f"no caniemail data in tests/data/caniemail.json for {missing}"


@pytest.mark.parametrize("feature", sorted(_used_features()))
def test_every_gap_in_the_clients_we_check_is_one_we_accept(feature: str) -> None:
    gaps = _gaps(feature)
    accepted, reason = ACCEPTED_GAPS.get(feature, (set(), ""))
    if accepted == ALL:
        assert gaps, f"{feature} works everywhere now: drop it from ACCEPTED_GAPS"
        return
    assert isinstance(accepted, set)
    assert gaps <= accepted, f"{feature} fails in {sorted(gaps - accepted)}: fix or accept it"
    assert accepted <= gaps, f"{feature} works in {sorted(accepted - gaps)} now: shorten the list"
    assert not accepted or reason


def test_the_accepted_gaps_name_only_features_we_use() -> None:
    assert set(ACCEPTED_GAPS) <= _used_features()


def test_the_html_features_listed_are_the_ones_the_mail_carries(tmp_path: Path) -> None:
    """ALWAYS_USED is checked against a real rendering, so the list cannot drift."""
    from newsletter.config import load_config
    from newsletter.content.issue import load_issue
    from newsletter.content.render import render_issue

    ws = make_workspace(tmp_path / "ws")
    html = render_issue(load_issue(ws / SAMPLE), load_config(ws / "newsletter.yaml")).html
    for marker in ("<table", "<style", "<h1", 'role="presentation"', 'lang="', 'dir="'):
        assert marker in html
    for marker in ('align="', 'width="', "aria-label=", 'name="color-scheme"', "<span", "<div"):
        assert marker in html
