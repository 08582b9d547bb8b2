"""The CLI's own words: help shows defaults and readable placeholders, counts agree with
their nouns, and shell completion is on offer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
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
        (["backup"], "backup [OPTIONS] FILE"),
        (["check"], "check [OPTIONS] ISSUE..."),
        (["add"], "add [OPTIONS] [URL]..."),
        (["suppressions"], "--since DATE"),
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


def every_command() -> list[tuple[list[str], typer.main.TyperCommand]]:
    """Each command path and its typer command, groups and their subcommands included."""
    found = []
    todo = [([], typer.main.get_command(app))]
    while todo:
        path, command = todo.pop()
        found.append((path, command))
        todo += [([*path, name], sub) for name, sub in getattr(command, "commands", {}).items()]
    return found


PYTHON_TYPES = re.compile(
    r"<(list\[|%|str|int|float|bool|path|Path|datetime|tuple|\w+ range)|\{[A-Za-z_]+\}"
    r"|\b(list\[\w+\]|NoneType|datetime|float range|int range)"
)


def names_in(line: str) -> set[str]:
    """The option names a help row starts with: `  -o, --out DIR  Output...` -> -o, --out."""
    return set(re.split(r"[ ,/]+", line.strip().split("  ")[0]))


@pytest.mark.parametrize(("path", "command"), every_command(), ids=lambda x: str(x))
def test_every_help_names_values_by_placeholders_and_shows_defaults(
    path: list[str], command: typer.main.TyperCommand
) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "240"}, terminal_width=240)
    assert result.exit_code == 0, result.output
    text = result.output
    usage = text.splitlines()[0]
    assert "{" not in usage and "<" not in usage, usage
    assert not PYTHON_TYPES.search(text), PYTHON_TYPES.search(text)
    lines = text.splitlines()
    for param in command.params:
        if param.param_type_name == "argument":
            name = str(param.metavar)
            assert name.isupper() and name in usage, (name, usage)
            continue
        if param.hidden or "--help" in param.opts:
            continue
        row = next(line for line in lines if set(param.opts) <= names_in(line))
        takes_value = not getattr(param, "is_flag", False)
        if takes_value:
            # one placeholder in capitals after the option's names: `--since DATE`
            assert re.fullmatch(r"-[-\w, /]* [A-Z][A-Z_]*", row.strip().split("  ")[0]), row
        if "[default:" in (param.help or ""):
            assert "[default:" in row, row
        elif takes_value and param.default not in (None, "", ()) and param.show_default:
            assert f"[default: {param.default}" in row, row


def test_shell_completion_is_offered_and_completes_commands_and_options() -> None:
    text = help_of()
    assert "--install-completion" in text and "--show-completion" in text
    script = runner.invoke(app, ["--show-completion", "bash"], env={"SHELL": "/bin/bash"})
    assert script.exit_code == 0 and "_newsletter_completion" in script.output
    complete = {"_NEWSLETTER_COMPLETE": "complete_bash", "COMP_CWORD": "2"}
    result = runner.invoke(
        app, [], prog_name="newsletter", env={**complete, "COMP_WORDS": "newsletter send --te"}
    )
    assert set(result.output.split()) == {"--test-to", "--templates"}


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
