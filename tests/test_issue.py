"""Loading issue files: good ones load, bad ones say file, line and field, all at once."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from newsletter.content.issue import load_issue
from newsletter.errors import IssueError
from tests.commands import assert_clean_exit, bare_workspace, cli, said
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
    assert issue.articles[0].link_text is None  # the button takes the language's read_more
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
    # the parser sees the missing `]` at the end of the file, on the line after the last
    assert problems(path) == [
        f"{path}:4: YAML syntax error: expected ',' or ']', but got '<stream end>'"
    ]


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


# --- through render, check and send: each bad file gets its message, and nothing is written --


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return bare_workspace(tmp_path / "ws", monkeypatch)


BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: [*c, *c, *c, *c, *c, *c, *c, *c, *c]
"""
DEEP = "title: " + "[" * 2_000 + "]" * 2_000 + "\n"
ARTICLES = "articles:\n  - {headline: H, summary: S, url: 'https://example.org/'}\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", r"issues/2025-08-08-x\.yaml: is empty; expected a YAML mapping"),
        (b"# only a comment\n", r"issues/2025-08-08-x\.yaml: is empty"),
        (bytes(range(256)) * 4, r"issues/2025-08-08-x\.yaml: is a binary file, not YAML text"),
        (b"title: caf\xe9\n", r"issues/2025-08-08-x\.yaml:1: is not UTF-8 text"),
        (BOMB.encode(), r"issues/2025-08-08-x\.yaml:2: YAML syntax error: anchors and aliases"),
        (DEEP.encode(), r"issues/2025-08-08-x\.yaml:1: YAML syntax error: nested more than 50"),
        (
            b"title: One\ntitle: Two\n" + ARTICLES.encode(),
            r"issues/2025-08-08-x\.yaml:2: title: given twice \(first on line 1\); keep one",
        ),
        (
            b"title: T\ndate: 2025-02-30\n" + ARTICLES.encode(),
            r"issues/2025-08-08-x\.yaml:2: date: input should be a valid date",
        ),
        (
            b'title: "half a pair: \\uD800"\n' + ARTICLES.encode(),
            r"issues/2025-08-08-x\.yaml:1: title: the value contains an escape that is no text",
        ),
        (
            b"title: T\n"
            + ARTICLES.replace("'https://example.org/'", '"https://e.org/a\\nb"').encode(),
            r"issues/2025-08-08-x\.yaml:3: articles\[0\]\.url: not an absolute http\(s\) URL",
        ),
        (
            ("title: " + "Long " * 60 + "\n" + ARTICLES).encode(),
            r"issues/2025-08-08-x\.yaml:1: title: as the subject \(none is given\), is 299",
        ),
        (
            b"title: !!python/object/apply:os.system [echo pwned]\n",
            r"issues/2025-08-08-x\.yaml:1: YAML syntax error: could not determine a constructor",
        ),
    ],
    ids=[
        "empty",
        "comment-only",
        "binary",
        "latin-1",
        "yaml-bomb",
        "deep-nesting",
        "duplicate-key",
        "no-such-date",
        "lone-surrogate",
        "url-with-newline",
        "title-too-long-for-a-subject",
        "python-tag",
    ],
)
def test_a_bad_issue_file_gets_its_message_and_exit_1_and_nothing_is_written(
    ws: Path, content: bytes, expected: str
) -> None:
    (ws / "issues" / "2025-08-08-x.yaml").write_bytes(content)
    for command in (
        ["render", "issues/2025-08-08-x.yaml"],
        ["check", "issues/2025-08-08-x.yaml"],
        ["send", "issues/2025-08-08-x.yaml", "--to", "list.csv", "--yes"],
    ):
        result = cli(*command)
        assert_clean_exit(result, 1)
        assert re.search(expected, said(result)), said(result)
    assert not (ws / "build").exists() and not (ws / "outbox").exists()


def test_a_missing_issue_or_templates_or_template_is_named(ws: Path) -> None:
    result = cli("render", "issues/2099-01-01-nope.yaml")
    assert_clean_exit(result, 1)
    assert "issues/2099-01-01-nope.yaml: no such file" in said(result)

    result = cli("render", SAMPLE, "--templates", "no-such-folder")
    assert_clean_exit(result, 1)
    assert "no-such-folder: no such templates folder" in said(result)

    (ws / "t").mkdir()
    (ws / "t" / "email.html").write_text("{% include 'footer.html' %}\n")
    result = cli("send", SAMPLE, "--to", "list.csv", "--yes", "--templates", "t")
    assert_clean_exit(result, 1)
    assert "template footer.html not found in t" in said(result)
    assert not (ws / "outbox").exists() and not (ws / "build").exists()
