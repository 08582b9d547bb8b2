"""`service:` in newsletter.yaml: where the reader service is, and what points at it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.content.issue import load_issue
from newsletter.content.render import render_issue
from newsletter.errors import ConfigError
from tests.workspace import REPO, SAMPLE, make_workspace

WITHOUT_UNSUBSCRIBE_URL = re.sub(
    r"(?m)^  url: https://brief.example.org/unsubscribe\n",
    "",
    (REPO / "newsletter.yaml").read_text(),
)


def test_unsubscribe_links_default_to_the_service(tmp_path: Path) -> None:
    ws = make_workspace(
        tmp_path, config=WITHOUT_UNSUBSCRIBE_URL + "service:\n  url: https://r.example.org/\n"
    )
    config = load_config(ws / "newsletter.yaml")
    assert config.unsubscribe_url == "https://r.example.org/unsubscribe"
    assert config.subscribe_url == "https://r.example.org/subscribe"
    rendered = render_issue(load_issue(ws / SAMPLE), config)
    assert "Forwarded this? Subscribe at https://r.example.org/subscribe" in rendered.text


def test_without_a_service_the_footer_has_no_subscribe_line(tmp_path: Path) -> None:
    config = load_config(make_workspace(tmp_path) / "newsletter.yaml")
    assert config.subscribe_url is None
    rendered = render_issue(load_issue(tmp_path / SAMPLE), config)
    assert "Forwarded this?" not in rendered.text and "Forwarded this?" not in rendered.html


@pytest.mark.parametrize("url", ["http://brief.example.org", "ftp://x.example.org"])
def test_a_public_service_must_be_https(tmp_path: Path, url: str) -> None:
    ws = make_workspace(tmp_path, config=WITHOUT_UNSUBSCRIBE_URL + f"service:\n  url: {url}\n")
    with pytest.raises(ConfigError, match=r"service\.url"):
        load_config(ws / "newsletter.yaml")
