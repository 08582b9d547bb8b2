"""The CLI as a user meets it: exit codes, messages, files written."""

from __future__ import annotations

import email
import email.policy
import inspect
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter import __version__
from newsletter.cli import app
from tests.workspace import MINIMAL_ISSUE, REPO, SAMPLE, make_workspace, write_issue

runner = CliRunner()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_workspace(tmp_path / "ws")
    monkeypatch.chdir(root)
    return root


def test_render_writes_html_text_and_eml(ws: Path) -> None:
    result = runner.invoke(app, ["render", SAMPLE])
    assert result.exit_code == 0, result.output
    stem = "2025-08-01-north-korea"
    for suffix in ("html", "txt", "eml"):
        assert f"wrote build/{stem}.{suffix}" in result.output
        assert (ws / "build" / f"{stem}.{suffix}").stat().st_size > 1000
    message = email.message_from_bytes(
        (ws / "build" / f"{stem}.eml").read_bytes(), policy=email.policy.default
    )
    assert message["To"] == "Reader <reader@example.com>"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert list(ws.glob("build/.*.tmp")) == []


def test_render_to_another_folder(ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    result = runner.invoke(app, ["render", SAMPLE, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "2025-08-01-north-korea.html").is_file()


def test_render_into_an_unwritable_place_is_a_usage_error(ws: Path) -> None:
    (ws / "blocker").write_text("a file, not a folder")
    result = runner.invoke(app, ["render", SAMPLE, "--out", "blocker/out"])
    assert result.exit_code == 2
    assert result.output == (
        "error: blocker/out: cannot write here (Not a directory); choose another --out\n"
    )


def test_bad_issue_exits_1_with_file_line_field(ws: Path) -> None:
    write_issue(
        ws,
        "2025-08-08-bad.yaml",
        MINIMAL_ISSUE.replace("url: https://news.example.net/first", "url: nope"),
    )
    result = runner.invoke(app, ["render", "issues/2025-08-08-bad.yaml"])
    assert result.exit_code == 1
    assert "error: issues/2025-08-08-bad.yaml:8: articles[0].url: not an absolute http(s) URL" in (
        result.output
    )
    assert "Traceback" not in result.output


def test_missing_config_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["render", "x.yaml"])
    assert result.exit_code == 1
    assert " ".join(result.output.split()) == (
        f"error: no newsletter.yaml in {tmp_path} or any folder above it; run `newsletter init"
        " DIR` to make a workspace, or pass --config PATH"
    )


def test_invalid_config_names_line_and_field(ws: Path) -> None:
    (ws / "newsletter.yaml").write_text("name: X\nfrom: {email: not-an-address}\nprovder: smtp\n")
    result = runner.invoke(app, ["render", SAMPLE])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "newsletter.yaml:2: from.email: not a valid email address" in out
    assert "newsletter.yaml:3: provder: unknown field" in out
    assert "newsletter.yaml:1: postal_address: required field is missing" in out


def test_wrong_usage_exits_2(ws: Path) -> None:
    missing = runner.invoke(app, ["render"])
    assert missing.exit_code == 2
    assert "Error: Missing argument" in missing.output
    unknown = runner.invoke(app, ["render", SAMPLE, "--no-such-flag"])
    assert unknown.exit_code == 2
    assert "Error: No such option: --no-such-flag" in unknown.output


def test_check_passes_a_clean_issue(ws: Path) -> None:
    write_issue(ws, "2025-08-08-clean.yaml", MINIMAL_ISSUE)
    result = runner.invoke(app, ["check", "issues/2025-08-08-clean.yaml", "--strict"])
    assert result.exit_code == 0, result.output
    assert "ok issues/2025-08-08-clean.yaml" in result.output
    assert "1 checked: 0 errors, 0 warnings" in result.output


def test_check_sample_warns_about_placeholder_links_and_strict_fails(ws: Path) -> None:
    result = runner.invoke(app, ["check", SAMPLE])
    assert result.exit_code == 0, result.output
    assert (
        f"warning: {SAMPLE}:14: articles[0].url: "
        "https://example.org/placeholder/north-koreans-in-russia is a placeholder link; put "
        "the real one" in " ".join(result.output.split())
    )
    assert "0 errors, 10 warnings" in result.output
    assert runner.invoke(app, ["check", SAMPLE, "--strict"]).exit_code == 1


def test_check_finds_every_kind_of_problem(ws: Path) -> None:
    write_issue(
        ws,
        "2025-08-08-lint.yaml",
        """\
title: TK
date: 2025-08-08
subject: Short
articles:
  - headline: A story TODO
    summary: "Lorem ipsum dolor. See [here](/relative) and ![](https://img.example.net/x.png)"
    url: https://news.example.net/1
    link_text: Click here
""",
    )
    result = runner.invoke(app, ["check", "issues/2025-08-08-lint.yaml"])
    assert result.exit_code == 1
    out = result.output
    path = "issues/2025-08-08-lint.yaml"
    assert f"warning: {path}:3: subject: is 5 characters" in out
    assert f"warning: {path}:1: no preheader" in out
    assert f"error: {path}:1: title: leftover placeholder 'TK'" in out
    assert f"error: {path}:5: articles[0].headline: leftover placeholder 'TODO'" in out
    assert f"error: {path}:6: articles[0].summary: leftover placeholder 'Lorem ipsum'" in out
    assert f"error: {path}:6: articles[0].summary: link '/relative' is not an absolute" in out
    assert f"warning: {path}:6: articles[0].summary: link text 'here' is vague" in out
    assert (
        f"error: {path}:6: articles[0].summary: image https://img.example.net/x.png has no alt"
        in out
    )
    assert f"warning: {path}:8: articles[0].link_text: 'Click here' says nothing" in out


def test_check_flags_templates_without_unsubscribe_or_address(ws: Path) -> None:
    write_issue(ws, "2025-08-08-clean.yaml", MINIMAL_ISSUE)
    custom = ws / "bare"
    custom.mkdir()
    (custom / "email.html").write_text(
        '<html><body>{{ issue.title }}<img src="https://x.example/a.png"></body></html>'
    )
    (custom / "email.txt").write_text("{{ issue.title }}\n")
    result = runner.invoke(app, ["check", "issues/2025-08-08-clean.yaml", "--templates", "bare"])
    assert result.exit_code == 1
    assert "email.html: no unsubscribe link" in result.output
    assert "email.txt: no unsubscribe link" in result.output
    assert "no postal address" in result.output
    assert "image https://x.example/a.png has no alt attribute" in result.output


def test_check_reports_invalid_files_and_goes_on(ws: Path) -> None:
    write_issue(ws, "2025-08-08-clean.yaml", MINIMAL_ISSUE)
    write_issue(ws, "2025-08-08-bad.yaml", "title: x\nbogus: 1\narticles: []\n")
    result = runner.invoke(
        app, ["check", "issues/2025-08-08-bad.yaml", "issues/2025-08-08-clean.yaml"]
    )
    assert result.exit_code == 1
    assert "issues/2025-08-08-bad.yaml:2: bogus: unknown field" in result.output
    assert "ok issues/2025-08-08-clean.yaml" in result.output


def test_preview_no_open_prints_the_path(ws: Path) -> None:
    result = runner.invoke(app, ["preview", SAMPLE, "--no-open"])
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    assert path == ws / "build" / "2025-08-01-north-korea.html"
    assert path.is_file()


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    names = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    assert {"render", "check", "preview", "cancel"} <= set(names)
    for command in app.registered_commands:
        name = command.name or (command.callback.__name__ if command.callback else "")
        summary = (inspect.getdoc(command.callback) or "").split("\n\n")[0]
        assert summary, f"`newsletter {name}` has no help text"
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0
        assert " ".join(summary.split()) in " ".join(result.output.split())
        assert f"newsletter {name}" in readme, f"`newsletter {name}` is not in the README"


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"newsletter {__version__}\n"
