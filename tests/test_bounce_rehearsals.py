"""A bounce that names no issue is put on the last issue the ledger really sent that
reader: the outbox's rehearsals (ledger schema 2) reached nobody, so they never count."""

from __future__ import annotations

import shutil
from pathlib import Path

from newsletter.delivery.send import SendOptions, send_issue
from newsletter.lists.aftermath import LedgerHistory
from tests.bouncing import make_ws, send
from tests.sending import ISSUE_ID
from tests.workspace import SAMPLE

REHEARSED = "2025-08-08-rehearsed"


def test_the_last_issue_ignores_a_later_rehearsal(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)  # a real send over SMTP
    path = cfg.root / "issues" / f"{REHEARSED}.yaml"
    shutil.copy(cfg.root / SAMPLE, path)
    rehearsal = send_issue(
        cfg, path, cfg.root / "list.csv", SendOptions(provider="outbox", as_new_issue=True)
    )
    assert rehearsal.sent > 0
    history = LedgerHistory(cfg)
    assert history.last_issue("reader1@example.com") == ISSUE_ID
    assert history.issues("READER1@example.com") == [ISSUE_ID]


def test_an_address_only_rehearsed_has_no_issue(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws")
    send_issue(cfg, cfg.root / SAMPLE, cfg.root / "list.csv", SendOptions(provider="outbox"))
    assert LedgerHistory(cfg).last_issue("reader1@example.com") is None
