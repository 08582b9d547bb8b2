"""`newsletter unsubscribe`: tokens from real mail put their readers on the suppression list."""

from __future__ import annotations

import csv
import email
import email.policy
import urllib.parse
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from newsletter.cli import app
from newsletter.config import load_config
from newsletter.lists.tokens import Signer
from newsletter.storage.store import open_store
from tests.sending import SECRET, workspace
from tests.workspace import SAMPLE

LIST_ID = "the-weekly-brief.example.org"
ENV = {"NEWSLETTER_SECRET": SECRET}


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = workspace(tmp_path / "ws", 5)
    monkeypatch.chdir(root)
    return root


def cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV if env is None else env, input=stdin)


def suppressed(ws: Path) -> dict[str, str]:
    with open_store(load_config(ws / "newsletter.yaml")) as store:
        return {s.email: s.reason for s in store.suppressions()}


def unsubscribe_header(ws: Path, address: str) -> str:
    for path in (ws / "outbox" / "new").iterdir():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if f"<{address}>" in str(message["To"]):
            return str(message["List-Unsubscribe"])
    raise AssertionError(f"no mail to {address}")


def test_links_subjects_and_tokens_from_sent_mail_suppress_their_readers(ws: Path) -> None:
    assert cli("send", SAMPLE, "--to", "list.csv", "--yes").exit_code == 0
    link = unsubscribe_header(ws, "reader00001@example.com").split(">")[0].lstrip("<")
    assert link.startswith("https://brief.example.org/unsubscribe?token=")
    mailto = unsubscribe_header(ws, "reader00002@example.com").split("<mailto:")[1].rstrip(">")
    subject = urllib.parse.unquote(mailto.split("subject=")[1])  # as the editor's inbox shows it
    assert subject.startswith("unsubscribe ")
    token = Signer(SECRET, LIST_ID).token("reader00003@example.com")

    result = cli("unsubscribe", link, f"Re: {subject}", token, token)
    assert result.exit_code == 0, result.output
    assert "3 added to the suppression list" in result.output
    expected = {f"reader0000{i}@example.com": "unsubscribe request" for i in (1, 2, 3)}
    assert suppressed(ws) == expected

    again = cli("unsubscribe", link)
    assert again.exit_code == 0
    assert "0 added to the suppression list, 1 there already" in again.output
    assert suppressed(ws) == expected

    plan = cli("send", SAMPLE, "--to", "list.csv", "--dry-run", "--json")
    assert '"suppressed": 3' in plan.output


def test_a_bad_token_is_refused_and_the_good_ones_still_count(ws: Path) -> None:
    good = Signer(SECRET, LIST_ID).token("reader00004@example.com")
    other_list = Signer(SECRET, "another.example.org").token("reader00000@example.com")
    head, _, mac = good.partition(".")
    tampered = f"{head}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}"
    result = cli("unsubscribe", other_list, good, tampered, "   ")
    assert result.exit_code == 1
    assert "1 added" in result.output
    assert result.output.count("not valid for this list") == 2
    assert other_list in result.output and "Traceback" not in result.output
    assert suppressed(ws) == {"reader00004@example.com": "unsubscribe request"}


def test_requests_can_come_on_stdin(ws: Path) -> None:
    signer = Signer(SECRET, LIST_ID)
    lines = [f"unsubscribe {signer.token(f'reader0000{i}@example.com')}" for i in range(3)]
    result = cli("unsubscribe", "-", stdin="\n".join(lines) + "\n\n")
    assert result.exit_code == 0, result.output
    assert set(suppressed(ws)) == {f"reader0000{i}@example.com" for i in range(3)}


def test_a_malformed_token_is_said_to_be_malformed(ws: Path) -> None:
    real = Signer(SECRET, LIST_ID).token("reader00001@example.com")
    result = cli("unsubscribe", real, "not-a.token!")
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "not-a.token!: this unsubscribe token is malformed" in said
    assert set(suppressed(ws)) == {"reader00001@example.com"}


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
