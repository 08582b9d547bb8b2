"""The CLI's own words: help shows defaults and readable placeholders, counts agree with
their nouns, and shell completion is on offer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.words import plural
from tests.workspace import MINIMAL_ISSUE, make_workspace, write_issue

runner = CliRunner()


def help_of(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize(
    ("command", "default"),
    [
        (["render"], "[default: build/]"),
        (["archive"], "[default: site/]"),
        (["new"], "[default: the next schedule.weekday]"),
        (["send"], "[default: provider in newsletter.yaml]"),
        ([], "[default: the nearest one at or above the current folder]"),
    ],
)
def test_help_shows_defaults(command: list[str], default: str) -> None:
    assert default in help_of(*command)


@pytest.mark.parametrize(
    ("command", "placeholder"),
    [
        (["render"], "--out DIR"),
        (["render"], "--templates DIR"),
        (["new"], "--date DATE"),
        (["send"], "--to FILE"),
        (["send"], "--test-to ADDRESS"),
        (["check"], "--link-timeout SECONDS"),
        ([], "--config FILE"),
        (["status"], "--show STATE"),
        (["backup"], "backup [OPTIONS] {FILE}"),
    ],
)
def test_placeholders_read_as_words(command: list[str], placeholder: str) -> None:
    text = help_of(*command)
    assert placeholder in text
    assert "%Y" not in text and "<bool>" not in text


def test_every_command_help_is_free_of_python_types_in_options() -> None:
    commands = ("init", "new", "check", "render", "preview", "send", "backup", "status")
    for command in (*commands, "unsubscribe", "archive"):
        options = help_of(command).split("Options:", 1)[1]
        assert not re.search(r"<(bool|path|str|int|float|list\[\w+\]|%[^>]*)>", options), command


def test_shell_completion_is_offered() -> None:
    text = help_of()
    assert "--install-completion" in text and "--show-completion" in text


def test_plural() -> None:
    assert plural(1, "warning") == "1 warning"
    assert plural(0, "warning") == "0 warnings"
    assert plural(2, "batch", "batches") == "2 batches"
    assert plural(1, "batch", "batches") == "1 batch"
    assert plural(12_000, "recipient") == "12,000 recipients"


def test_check_counts_agree_with_their_nouns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_workspace(tmp_path / "ws")
    monkeypatch.chdir(ws)
    write_issue(ws, "2025-08-08-one.yaml", MINIMAL_ISSUE.replace("preheader: ", "# preheader: "))
    result = runner.invoke(app, ["check", "issues/2025-08-08-one.yaml"])
    assert "1 checked: 0 errors, 1 warning\n" in result.output
