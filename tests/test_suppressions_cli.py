"""`newsletter suppressions`: list, filter, export, and an explicit, logged removal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from tests.workspace import make_workspace

runner = CliRunner()
LIST = (
    "email,reason,added_at\n"
    "gone@example.com,hard bounce,2026-11-10T09:14:02+00:00\n"
    "grumpy@example.com,spam complaint,2026-11-12T10:00:00+00:00\n"
    "ada@example.com,unsubscribe request,2026-10-01T08:00:00+00:00\n"
)


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_workspace(tmp_path / "ws")
    (root / "suppressions.csv").write_text(LIST, encoding="utf-8")
    monkeypatch.chdir(root)
    return root


def test_lists_every_suppression_with_why_and_when(ws: Path) -> None:
    result = runner.invoke(app, ["suppressions"])
    assert result.exit_code == 0, result.output
    assert "2026-11-10  gone@example.com  hard bounce" in result.output
    assert "3 addresses suppressed" in result.output


def test_filters_by_reason_and_date_and_exports_csv(ws: Path) -> None:
    result = runner.invoke(app, ["suppressions", "--reason", "BOUNCE", "--csv"])
    assert result.exit_code == 0, result.output
    assert result.output == (
        "email,reason,added_at\ngone@example.com,hard bounce,2026-11-10T09:14:02+00:00\n"
    )
    result = runner.invoke(app, ["suppressions", "--since", "2026-11-01", "--csv"])
    assert [line.split(",")[0] for line in result.output.splitlines()[1:]] == [
        "gone@example.com",
        "grumpy@example.com",
    ]


def test_remove_takes_the_address_off_and_logs_who_and_when(ws: Path) -> None:
    result = runner.invoke(
        app, ["suppressions", "remove", "GONE@example.com", "--why", "typo fixed"]
    )
    assert result.exit_code == 0, result.output
    assert "removed GONE@example.com (1 row)" in result.output
    text = (ws / "suppressions.csv").read_text(encoding="utf-8")
    assert "gone@example.com" not in text
    assert text.startswith("email,reason,added_at\n") and "grumpy@example.com" in text
    log = (ws / ".newsletter" / "suppressions.log").read_text(encoding="utf-8")
    (entry,) = [json.loads(line) for line in log.splitlines()]
    assert entry["email"] == "GONE@example.com" and entry["why"] == "typo fixed"
    assert entry["who"] and entry["at"].startswith("20")


def test_removing_an_address_that_is_not_there_is_a_usage_error(ws: Path) -> None:
    result = runner.invoke(app, ["suppressions", "remove", "nobody@example.com"])
    assert result.exit_code == 2
    assert "nobody@example.com is not suppressed" in result.output
    assert not (ws / ".newsletter" / "suppressions.log").exists()
