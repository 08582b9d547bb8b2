"""Every text colour of the mail against the background it sits on, light and dark:
WCAG 2 contrast of at least 4.5:1 (AA for body text), computed from the style sheets."""

from __future__ import annotations

import re

import pytest

from newsletter.content.render import PACKAGE_TEMPLATES

#: Text selector -> the selector whose background it sits on.
PAIRS = {
    ".brand": ".container",
    ".title": ".container",
    ".date": ".container",
    ".masthead": ".container",
    ".intro": ".container",
    ".intro a": ".container",
    ".section-title": ".container",
    ".source": ".container",
    ".headline": ".container",
    ".headline a": ".container",
    ".summary": ".container",
    ".summary a": ".container",
    ".image": ".container",  # the alt text shown while images are blocked
    ".button": ".button",
    ".footer": ".container",
    ".footer a": ".container",
    ".outer-links": ".wrapper",
    ".outer-links a": ".wrapper",
}
AA = 4.5


def _rules(css: str) -> dict[str, dict[str, str]]:
    """selector -> {property: value}, later rules winning, `!important` dropped."""
    rules: dict[str, dict[str, str]] = {}
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        decls = {
            k.strip(): v.replace("!important", "").strip()
            for k, v in (d.split(":", 1) for d in body.split(";") if ":" in d)
        }
        for selector in selectors.split(","):
            rules.setdefault(" ".join(selector.split()), {}).update(decls)
    return rules


def _clean(css: str) -> str:
    return re.sub(r"/\*.*?\*/|\{#.*?#\}", "", css, flags=re.S)


LIGHT = _rules(_clean((PACKAGE_TEMPLATES / "email.css").read_text("utf-8")))
_MEDIA = _clean((PACKAGE_TEMPLATES / "email-media.css").read_text("utf-8"))
_DARK_BLOCK = re.search(
    r"@media \(prefers-color-scheme: dark\) \{((?:[^{}]*\{[^{}]*\})*)\s*\}", _MEDIA
)
assert _DARK_BLOCK is not None
DARK = _rules(_DARK_BLOCK.group(1))
OUTSIDE_MEDIA = _rules(re.sub(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*\s*\}", "", _MEDIA))


def _value(selector: str, prop: str, scheme: str) -> str:
    if scheme == "dark" and prop in DARK.get(selector, {}):
        return DARK[selector][prop]
    value = LIGHT.get(selector, {}).get(prop)
    assert value, f"email.css gives {selector} no {prop}"
    return value


def _luminance(hex_colour: str) -> float:
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    channels = [int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_contrast_is_computed_the_wcag_way() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
    # the pair the issue reported: the old section title in dark mode
    assert contrast("#b33c28", "#1b222c") == pytest.approx(2.7, abs=0.1)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("text", sorted(PAIRS))
def test_every_text_reads_at_aa_on_its_background(text: str, scheme: str) -> None:
    fg = _value(text, "color", scheme)
    bg = _value(PAIRS[text], "background-color", scheme)
    ratio = contrast(fg, bg)
    assert ratio >= AA, f"{text} {fg} on {bg} ({scheme}) is {ratio:.2f}:1"


def test_every_coloured_selector_is_paired() -> None:
    """A new text colour must say which background it sits on, or it is never checked."""
    coloured = {
        s for s, d in [*LIGHT.items(), *DARK.items()] if d.get("color", "inherit") != "inherit"
    }
    assert coloured <= PAIRS.keys(), sorted(coloured - PAIRS.keys())


def test_links_have_colours_of_their_own() -> None:
    """Links left to the client come out default blue: 1.7:1 on the dark background."""
    for selector in (".intro a", ".summary a", ".footer a", ".outer-links a", ".headline a"):
        assert "color" in LIGHT[selector] and "color" in DARK[selector], selector


def test_outlook_com_gets_the_same_dark_palette() -> None:
    """Outlook.com recolours by itself and marks it with data-ogsc/ogsb; our rules for those
    markers must be the dark palette, not a third one."""
    for selector, decls in OUTSIDE_MEDIA.items():
        marker = re.match(r"\[data-ogs([cb])\] (.+)", selector)
        if not marker:
            continue
        prop = "color" if marker.group(1) == "c" else "background-color"
        target = marker.group(2)
        if target == "body":
            target = ".wrapper"
        assert decls[prop] == DARK[target][prop], selector
    assert any(s.startswith("[data-ogsc]") for s in OUTSIDE_MEDIA)
    assert any(s.startswith("[data-ogsb]") for s in OUTSIDE_MEDIA)
