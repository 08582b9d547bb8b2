"""`language:` and `words:` in newsletter.yaml: dates, fixed words and direction follow."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.content.issue import load_issue
from newsletter.content.render import render_issue
from newsletter.delivery.message import sample_recipient
from newsletter.errors import ConfigError
from newsletter.web.archive import build_archive
from tests.workspace import REPO, SAMPLE, make_workspace

BASE_CONFIG = (REPO / "newsletter.yaml").read_text("utf-8")


def render_in(tmp_path: Path, extra: str) -> tuple[str, str]:
    ws = make_workspace(tmp_path / "ws", config=BASE_CONFIG + extra)
    config = load_config(ws / "newsletter.yaml", env={})
    rendered = render_issue(load_issue(ws / SAMPLE), config)
    return rendered.personalise(sample_recipient(config).fields | {"name": ""})


def test_english_is_the_default(tmp_path: Path) -> None:
    page, text = render_in(tmp_path, "")
    assert '<html lang="en" dir="ltr"' in page
    assert "1 August 2025" in page and "Hi there," in text


@pytest.mark.parametrize(
    ("language", "date", "greeting", "unsubscribe", "direction"),
    [
        ("de", "1. August 2025", "Hallo zusammen,", "Abbestellen", "ltr"),
        ("es", "1 de agosto de 2025", "Hola a todos,", "Darse de baja", "ltr"),
        ("he", "1 באוגוסט 2025", "שלום לכולם,", "ביטול הרשמה", "rtl"),
    ],
)
def test_a_language_brings_its_dates_words_and_direction(
    tmp_path: Path, language: str, date: str, greeting: str, unsubscribe: str, direction: str
) -> None:
    page, text = render_in(tmp_path, f"language: {language}\n")
    assert f'<html lang="{language}" dir="{direction}"' in page
    assert date in page and date in text
    assert f">{greeting}</p>" in page and greeting in text
    assert f">{unsubscribe}</a>" in page and f"{unsubscribe}: " in text
    assert "View this issue in your browser" not in page


def test_words_in_the_config_win_and_regions_fall_back_to_their_language(
    tmp_path: Path,
) -> None:
    page, text = render_in(tmp_path, "language: de_AT\nwords:\n  greeting: Servus\n")
    assert '<html lang="de-AT"' in page
    assert "Servus zusammen," in text
    assert "Abbestellen" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("language: klingon\n", "unknown language 'klingon'"),
        ("words:\n  greting: Hey\n", "unknown words ['greting']"),
        ("words:\n  receiving: Thanks, %s\n", "words.receiving needs two %s"),
    ],
)
def test_mistakes_are_config_errors(tmp_path: Path, extra: str, message: str) -> None:
    ws = make_workspace(tmp_path / "ws", config=BASE_CONFIG + extra)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(ws / "newsletter.yaml", env={})


def test_the_archive_speaks_the_language_too(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", config=BASE_CONFIG + "language: he\n")
    config = load_config(ws / "newsletter.yaml", env={})
    build_archive(config)
    page = (ws / "site" / "2025-08-01-north-korea.html").read_text("utf-8")
    assert '<html lang="he" dir="rtl">' in page
    assert "1 באוגוסט 2025" in page
    assert 'xml:lang="he"' in (ws / "site" / "feed.xml").read_text("utf-8")
