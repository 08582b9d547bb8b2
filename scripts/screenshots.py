"""Screenshots of rendered issues in headless Chromium, at phone to desktop widths, light
and dark, for a person to look at after a template change.

    .venv/bin/python scripts/screenshots.py [ISSUE.yaml ...] [--out build/screenshots]

Default issues: the sample and tests/data/issues/2025-09-05-long-links.yaml (sections, an
image, an 80-character URL, a 60-letter word, a long title). Needs Debian's `chromium`
and `pip install playwright` (its own browser download is not needed). Prints any page
that is wider than its window.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from newsletter.config import load_config
from newsletter.content.issue import load_issue
from newsletter.content.render import render_issue
from newsletter.delivery.message import sample_recipient

REPO = Path(__file__).resolve().parents[1]
ISSUES = [
    REPO / "issues/2025-08-01-north-korea.yaml",
    REPO / "tests/data/issues/2025-09-05-long-links.yaml",
]
WIDTHS = (320, 375, 600, 800)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        sys.exit("install Chromium: apt-get install chromium")
    return found


def shoot_all(pages: list[Path], out: Path) -> list[Path]:
    """Full-page PNGs of each page at each width, light and dark. Playwright sets the
    viewport exactly (Chromium's own --screenshot will not go below ~500 px wide) and
    emulates prefers-color-scheme."""
    from playwright.sync_api import sync_playwright

    shots = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=chromium(), args=FLAGS, headless=True
        )
        for html in pages:
            for width in WIDTHS:
                for scheme in ("light", "dark"):
                    page = browser.new_page()
                    page.set_viewport_size({"width": width, "height": 800})
                    page.emulate_media(color_scheme=scheme)
                    page.goto(html.resolve().as_uri())
                    png = out / f"{html.stem}-{width}-{scheme}.png"
                    page.screenshot(path=str(png), full_page=True)
                    scroll = page.evaluate("document.documentElement.scrollWidth")
                    if scroll > width:
                        print(f"{png.name}: {scroll} px wide in a {width} px window")
                    page.close()
                    shots.append(png)
        browser.close()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("issues", nargs="*", type=Path, default=ISSUES)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "screenshots")
    args = parser.parse_args()
    config = load_config(REPO / "newsletter.yaml")
    args.out.mkdir(parents=True, exist_ok=True)
    pages: list[Path] = []
    for path in args.issues:
        rendered = render_issue(load_issue(path), config)
        page, _ = rendered.personalise(sample_recipient(config).fields)
        html = args.out / f"{path.stem}.html"
        html.write_text(page, encoding="utf-8")
        pages.append(html)
    for png in shoot_all(pages, args.out):
        print(png)


if __name__ == "__main__":
    main()
