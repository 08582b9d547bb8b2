"""Loading issue files: good ones load, bad ones say file, line and field, all at once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from newsletter.content.issue import load_issue
from newsletter.errors import IssueError
from tests.workspace import MINIMAL_ISSUE, REPO, SAMPLE, write_issue


def problems(path: Path) -> list[str]:
    with pytest.raises(IssueError) as info:
        load_issue(path)
    return [str(p) for p in info.value.problems]


def test_sample_issue_carries_the_seed_word_for_word() -> None:
    issue = load_issue(REPO / SAMPLE)
    seed = (REPO.parent / "shared" / "seeds" / "000_489300d38a1c3921.txt").read_text()
    blocks = [b.strip() for b in seed.split("\n\n") if b.strip()]
    assert issue.title == blocks[0] == "North Korea"
    assert len(issue.articles) == 10
    for i, article in enumerate(issue.articles):
        assert article.headline == blocks[1 + 3 * i]
        assert article.summary == blocks[2 + 3 * i]
        assert article.link_text == blocks[3 + 3 * i] == "Read More"
        assert article.url.startswith("https://example.org/placeholder/")


def test_minimal_issue_gets_defaults(tmp_path: Path) -> None:
    path = write_issue(
        tmp_path,
        "2025-08-08-notes.yaml",
        MINIMAL_ISSUE.replace("subject: Weekly notes for the eighth\n", ""),
    )
    issue = load_issue(path)
    assert issue.subject == "Weekly notes"  # defaults from the title
    assert issue.articles[0].link_text == "Read More"
    assert issue.id == "2025-08-08-notes"


def test_date_comes_from_the_file_name_when_absent(tmp_path: Path) -> None:
    path = write_issue(
        tmp_path, "2025-09-05-notes.yaml", MINIMAL_ISSUE.replace("date: 2025-08-08\n", "")
    )
    assert load_issue(path).date == dt.date(2025, 9, 5)


def test_no_date_anywhere_says_how_to_give_one(tmp_path: Path) -> None:
    path = write_issue(tmp_path, "notes.yaml", MINIMAL_ISSUE.replace("date: 2025-08-08\n", ""))
    assert problems(path) == [
        f"{path}:1: date: required: add `date: YYYY-MM-DD` or name the file "
        "<YYYY-MM-DD>-<slug>.yaml"
    ]


def test_every_problem_is_reported_at_once_with_line_and_field(tmp_path: Path) -> None:
    path = write_issue(
        tmp_path,
        "2025-08-08-bad.yaml",
        """\
title: Weekly notes
date: 2025-08-08
subjet: A typo in a key
articles:
  - headline: First story
    summary: Fine.
    url: https://news.example.net/first
  - headline: Second story
    summary: ""
    url: not-a-url
  - summary: No headline here.
    url: ftp://files.example.net/x
""",
    )
    assert problems(path) == [
        f"{path}:3: subjet: unknown field",
        f"{path}:9: articles[1].summary: must not be empty",
        f"{path}:10: articles[1].url: not an absolute http(s) URL: 'not-a-url'",
        f"{path}:11: articles[2].headline: required field is missing",
        f"{path}:12: articles[2].url: not an absolute http(s) URL: 'ftp://files.example.net/x'",
    ]


def test_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = write_issue(tmp_path, "2025-08-08-x.yaml", "title: A\narticles:\n  - headline: [oops\n")
    (message,) = problems(path)
    assert message.startswith(f"{path}:4: YAML syntax error:") or message.startswith(
        f"{path}:3: YAML syntax error:"
    )


def test_empty_binary_and_non_utf8_files(tmp_path: Path) -> None:
    empty = write_issue(tmp_path, "2025-08-08-empty.yaml", "")
    assert problems(empty) == [f"{empty}: is empty; expected a YAML mapping"]
    binary = tmp_path / "issues" / "2025-08-08-bin.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert problems(binary) == [f"{binary}: is a binary file, not YAML text"]
    latin = tmp_path / "issues" / "2025-08-08-latin.yaml"
    latin.write_bytes(b"title: ok\nsubject: caf\xe9\n")
    assert problems(latin) == [f"{latin}:2: is not UTF-8 text; save the file as UTF-8"]


def test_a_list_instead_of_a_mapping(tmp_path: Path) -> None:
    path = write_issue(tmp_path, "2025-08-08-list.yaml", "- a\n- b\n")
    assert problems(path) == [f"{path}:1: expected a YAML mapping of fields"]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "issues" / "nope.yaml"
    assert problems(path) == [f"{path}: no such file"]


def test_anchors_and_aliases_are_refused(tmp_path: Path) -> None:
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
    path = write_issue(tmp_path, "2025-08-08-bomb.yaml", bomb)
    (message,) = problems(path)
    assert message.startswith(f"{path}:2: YAML syntax error: anchors and aliases")


def test_issue_needs_articles(tmp_path: Path) -> None:
    path = write_issue(tmp_path, "2025-08-08-none.yaml", "title: Nothing\n")
    assert problems(path) == [
        f"{path}:1: an issue needs `articles` or `sections` with at least one article"
    ]


def test_sections_group_articles(tmp_path: Path) -> None:
    path = write_issue(
        tmp_path,
        "2025-08-08-sections.yaml",
        """\
title: Sectioned
sections:
  - title: Asia
    intro: The region this week.
    articles:
      - headline: One
        summary: One summary.
        url: https://news.example.net/1
        source: Example News
        link_text: Read the report
        image: {url: "https://img.example.net/1.jpg", alt: "A harbour at dawn"}
  - title: Europe
    articles: []
""",
    )
    assert problems(path) == [
        f"{path}:13: sections[1].articles: list should have at least 1 item after validation, not 0"
    ]


def test_control_characters_and_multiline_headlines_are_refused(tmp_path: Path) -> None:
    path = write_issue(
        tmp_path,
        "2025-08-08-ctl.yaml",
        MINIMAL_ISSUE.replace("headline: First story", 'headline: "First\\nstory\\u0007"'),
    )
    assert problems(path) == [
        f"{path}:6: articles[0].headline: contains a control character; remove it"
    ]
