"""Two addresses are one reader as mail systems see it: case aside, and nothing more.

`straße@` and `strasse@` are two mailboxes; Unicode case folding makes them one string,
which skipped the second reader as a duplicate of the first.
"""

from __future__ import annotations

from pathlib import Path

from newsletter.delivery.send import SendOptions, send_issue
from newsletter.lists.addresses import address_key, smtp_address
from newsletter.lists.subscribers import Skipped, SkipReason, Subscriber, read_subscribers
from newsletter.storage.ledger import Ledger
from tests.sending import ISSUE_ID, config, workspace
from tests.workspace import SAMPLE


def test_keys_ignore_case_but_never_fold_one_letter_into_others() -> None:
    assert address_key("Ada@example.com") == address_key("ADA@example.com")
    assert address_key("straße@example.de") != address_key("strasse@example.de")
    assert address_key("STRASSE@example.de") == address_key("strasse@example.de")
    assert address_key("Ärger@example.de") == address_key("ärger@example.de")


def test_strasse_and_strasse_with_sharp_s_are_two_readers(tmp_path: Path) -> None:
    listed = tmp_path / "list.csv"
    listed.write_text(
        "email,name\nstraße@example.de,Eins\nstrasse@example.de,Zwei\nSTRASSE@example.de,Drei\n",
        encoding="utf-8",
    )
    (tmp_path / "suppressions.csv").write_text("email\nmasse@example.de\n", encoding="utf-8")
    (tmp_path / "list2.csv").write_text("email\nmaße@example.de\n", encoding="utf-8")
    with read_subscribers(listed) as stream:
        rows = list(stream)
    kept = [r.email for r in rows if isinstance(r, Subscriber)]
    assert kept == ["straße@example.de", "strasse@example.de"]
    (dup,) = [r for r in rows if isinstance(r, Skipped)]
    assert (dup.reason, dup.detail) == (SkipReason.DUPLICATE, "duplicate of line 3")
    with read_subscribers(tmp_path / "list2.csv", suppressions=tmp_path / "suppressions.csv") as s:
        assert [r.email for r in s if isinstance(r, Subscriber)] == ["maße@example.de"]


def test_both_are_mailed_and_recorded_apart(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 0)
    (ws / "list.csv").write_text(
        "email,name\nstraße@example.de,Eins\nstrasse@example.de,Zwei\n", encoding="utf-8"
    )
    report = send_issue(config(ws, {}), ws / SAMPLE, ws / "list.csv", SendOptions("outbox"))
    assert (report.sent, sum(report.skipped.values())) == (2, 0)
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert sorted(d.key for d in ledger.deliveries(ISSUE_ID, "sent", rehearsal=True)) == [
            "strasse@example.de",
            "straße@example.de",
        ]


def test_the_smtp_form_of_an_address_depends_on_smtputf8() -> None:
    assert smtp_address("ada@exämple.com", smtputf8=False) == "ada@xn--exmple-cua.com"
    assert smtp_address("ada@exämple.com", smtputf8=True) == "ada@exämple.com"
    assert smtp_address("üñí@exämple.com", smtputf8=True) == "üñí@exämple.com"
    assert smtp_address("üñí@exämple.com", smtputf8=False) is None
    assert smtp_address("ada@example.com", smtputf8=False) == "ada@example.com"
