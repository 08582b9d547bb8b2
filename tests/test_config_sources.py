"""`sources:` in newsletter.yaml: the feeds `newsletter add --from-feeds` reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter import scaffold
from newsletter.config import load_config
from newsletter.errors import ConfigError
from tests.workspace import REPO


def test_init_writes_sources_with_commented_examples(tmp_path: Path) -> None:
    workspace = scaffold.init_workspace(tmp_path / "letter")
    text = workspace.config.read_text(encoding="utf-8")
    assert "sources:\n  # - https://www.example.org/world/rss.xml\n" in text
    assert "`newsletter add --from-feeds`" in text
    assert load_config(workspace.config, env={}).settings.sources == []


def test_sources_must_be_http_urls(tmp_path: Path) -> None:
    config = tmp_path / "newsletter.yaml"
    base = (REPO / "newsletter.yaml").read_text(encoding="utf-8")
    config.write_text(base + "sources:\n  - https://news.example.net/rss\n  - feed.xml\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={})
    line = len(base.splitlines()) + 3
    assert str(caught.value).endswith(
        f"newsletter.yaml:{line}: sources[1]: not an absolute http(s) URL: 'feed.xml'"
    )
