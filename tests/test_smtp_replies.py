"""What the SMTP provider makes of the server's answer after the end of DATA (issue 11, item 14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import Config
from newsletter.delivery.report import Report
from newsletter.delivery.send import SendOptions, send_issue
from newsletter.errors import NothingSent
from newsletter.storage.ledger import Ledger
from tests.commands import smtp_env
from tests.sending import ISSUE_ID, config, workspace
from tests.servers.smtp_pipelining import PipeliningServer
from tests.workspace import SAMPLE


def nobody_mailed(cfg: Config, ws: Path) -> Report:
    """A send whose every outcome is unknown mailed nobody, as far as anyone knows: exit 4."""
    with pytest.raises(NothingSent) as caught:
        send_issue(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
    return caught.value.report


def test_an_answer_without_a_code_after_data_is_unknown_and_not_sent_again(
    tmp_path: Path,
) -> None:
    ws = workspace(tmp_path / "ws", 1)
    with PipeliningServer(end_replies={1: "OK queued as 12345"}) as server:
        cfg = config(ws, smtp_env(server.port))
        report = nobody_mailed(cfg, ws)
        assert (report.sent, report.unknown, report.failed) == (0, 1, 0)
        with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
            assert ledger.counts(ISSUE_ID) == {"unknown": 1}
            (row,) = ledger.deliveries(ISSUE_ID)
        assert "queued as 12345" in (row.error or "")
        rerun = send_issue(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
        assert (rerun.sent, rerun.unknown_before) == (0, 1)
        assert server.recipients() == ["reader00000@example.com"]


def test_an_answer_with_a_code_that_means_nothing_after_data_is_unknown(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 3)
    with PipeliningServer(end_replies={2: "999 what"}) as server:
        cfg = config(ws, smtp_env(server.port))
        report = send_issue(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
        assert (report.sent, report.unknown) == (2, 1)
        assert sorted(server.recipients()) == [f"reader{i:05d}@example.com" for i in range(3)]
