"""`newsletter sync sendgrid` against the SendGrid-like server: pages, 429s, idempotence."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import Config
from newsletter.errors import PermanentProviderError
from newsletter.lists.sendgrid_sync import SyncReport, sync_sendgrid
from newsletter.lists.suppressions import (
    list_suppressions,
    open_sink,
)
from newsletter.storage.bounces import open_state
from tests.bouncing import make_ws, send
from tests.sending import ISSUE_ID, SECRET, config
from tests.servers import sendgrid as sg
from tests.servers.sendgrid import TEST_API_KEY, SendGridServer

NOW = int(time.time())


def account(cfg: Config, server: SendGridServer) -> Config:
    env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": server.url}
    return config(cfg.root, env)


def sync(
    cfg: Config, waits: list[float] | None = None, since: datetime | None = None
) -> SyncReport:
    with open_state(cfg.state_dir) as state:
        return sync_sendgrid(
            cfg,
            sink=open_sink(cfg),
            state=state,
            since=since,
            sleep=(waits if waits is not None else []).append,
        )


def suppressed(cfg: Config) -> dict[str, str]:
    return {row.email: row.reason for row in list_suppressions(cfg)}


def stock(server: SendGridServer) -> None:
    server.add_suppressions(
        "bounces",
        {
            "email": "gone@example.com",
            "created": NOW - 60,
            "reason": "550 5.1.1 no such user",
            "status": "5.1.1",
        },
    )
    server.add_suppressions(
        "spam_reports", {"email": "grumpy@example.com", "created": NOW - 50, "ip": "192.0.2.1"}
    )
    server.add_suppressions(
        "invalid_emails",
        {
            "email": "left.company@example.net",
            "created": NOW - 40,
            "reason": "Mail domain mentioned in email address is unknown",
        },
    )
    server.add_suppressions("unsubscribes", {"email": "reader1@example.com", "created": NOW - 30})
    server.add_suppressions(
        "blocks",
        {
            "email": "full.box@gmail.com",
            "created": NOW - 20,
            "reason": "421 try again later",
            "status": "4.7.0",
        },
    )


def test_each_list_lands_with_its_reason_and_the_issue(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    cfg = account(make_ws(tmp_path / "ws"), sendgrid_server)
    send(cfg)
    stock(sendgrid_server)

    report = sync(cfg)

    assert suppressed(cfg) == {
        "gone@example.com": "hard bounce",
        "grumpy@example.com": "spam complaint",
        "left.company@example.net": "invalid address",
        "reader1@example.com": "unsubscribed at the provider",
    }
    # a block is a soft bounce: counted, not suppressed, below the limit
    assert report.actions == {"suppressed": 4, "counted": 1}
    with open_state(cfg.state_dir) as state:
        assert state.issue_counts(ISSUE_ID) == {
            "hard": 1,
            "complaint": 1,
            "invalid": 1,
            "unsubscribe": 1,
            "soft": 1,
        }


def test_a_second_run_adds_nothing_and_starts_where_the_first_ended(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    cfg = account(make_ws(tmp_path / "ws"), sendgrid_server)
    stock(sendgrid_server)
    first = sync(cfg)
    before = list_suppressions(cfg)
    sendgrid_server.suppression_requests.clear()

    again = sync(cfg)

    assert list_suppressions(cfg) == before
    assert again.suppressed == []
    assert again.since == dict.fromkeys(again.since, first.until)
    assert all(f"start_time={first.until}" in p for p in sendgrid_server.suppression_requests)
    # --since backfills: the same rows again, and still nothing new
    backfill = sync(cfg, since=datetime.fromtimestamp(NOW - 3600, UTC))
    assert backfill.fetched["bounces"] == 1
    assert backfill.actions == {"seen": 5}
    assert list_suppressions(cfg) == before


def test_long_lists_are_read_page_by_page(tmp_path: Path, sendgrid_server: SendGridServer) -> None:
    cfg = account(make_ws(tmp_path / "ws"), sendgrid_server)
    rows = [{"email": f"gone{i:04d}@example.com", "created": NOW - i} for i in range(1203)]
    sendgrid_server.add_suppressions("bounces", *rows)

    report = sync(cfg)

    assert report.fetched["bounces"] == 1203
    assert len(suppressed(cfg)) == 1203
    pages = [p for p in sendgrid_server.suppression_requests if "/bounces?" in p]
    queries = [parse_qs(urlsplit(p).query) for p in pages]
    assert [q["offset"] for q in queries] == [["0"], ["500"], ["1000"]]
    assert all(q["limit"] == ["500"] for q in queries)


def test_a_429_waits_until_the_rate_limit_resets(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    cfg = account(make_ws(tmp_path / "ws"), sendgrid_server)
    stock(sendgrid_server)
    sendgrid_server.inject(
        sg.status(429, retry_after=None, headers={"X-RateLimit-Reset": str(int(time.time()) + 7)})
    )
    waits: list[float] = []

    report = sync(cfg, waits)

    assert len(waits) == 1 and 5 <= waits[0] <= 7
    assert report.requests == 5 + 1
    assert len(suppressed(cfg)) == 4


def test_the_unsubscribe_groups_suppressions_too(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = make_ws(tmp_path / "ws", extra="\nsendgrid:\n  asm_group_id: 4242\n")
    cfg = account(ws, sendgrid_server)
    sendgrid_server.add_group_suppressions(4242, "quiet@example.com")
    sendgrid_server.add_group_suppressions(7, "someone.else@example.com")

    sync(cfg)
    again = sync(cfg)

    assert suppressed(cfg) == {"quiet@example.com": "unsubscribed at the provider"}
    assert again.actions == {"seen": 1}


def test_a_key_without_permission_says_which(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    cfg = account(make_ws(tmp_path / "ws"), sendgrid_server)
    sendgrid_server.inject(sg.status(403, message="access forbidden"))
    with pytest.raises(PermanentProviderError, match="Suppressions permission"):
        sync(cfg)


def test_the_cli_syncs_and_reports(
    tmp_path: Path, sendgrid_server: SendGridServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_ws(tmp_path / "ws")
    stock(sendgrid_server)
    monkeypatch.chdir(ws.root)
    for name, value in {
        "NEWSLETTER_SECRET": SECRET,
        "SENDGRID_API_KEY": TEST_API_KEY,
        "SENDGRID_API_HOST": sendgrid_server.url,
    }.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["sync", "sendgrid"])
    assert result.exit_code == 0, result.output
    assert "gone@example.com: hard bounce" in result.output
    assert "4 suppressed" in result.output
    assert TEST_API_KEY not in result.output


def test_without_a_key_the_cli_says_which_permission_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_ws(tmp_path / "ws")
    monkeypatch.chdir(ws.root)
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["sync", "sendgrid"])
    assert result.exit_code == 1
    assert "read access to Suppressions" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1762765642, 1762765642),
        ("1762765642", 1762765642),
        ("2025-11-10 09:07:22", 1762765642),
        (None, 7),
        ("soon", 7),
    ],
)
def test_created_is_read_as_unix_seconds_in_any_shape(value: object, expected: int) -> None:
    from newsletter.lists.sendgrid_sync import _created

    assert _created(value, 7) == expected
