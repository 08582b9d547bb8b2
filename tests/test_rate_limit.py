"""smtp.rate_limit and sendgrid.rate_limit: one cap shared by every connection and request."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import load_config
from newsletter.delivery.ratelimit import Limiter, parse_rate
from newsletter.delivery.send import SendOptions, SendStopped, send_issue
from newsletter.errors import ConfigError, RateLimitReached
from newsletter.storage.ledger import Ledger
from tests.commands import smtp_env
from tests.sending import ISSUE_ID, SECRET, config, workspace
from tests.servers.sendgrid import SendGridServer
from tests.servers.smtp_pipelining import PipeliningServer
from tests.workspace import SAMPLE


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [
        ("10/s", 10, 1),
        ("600/min", 600, 60),
        ("1000 / hour", 1000, 3600),
        ("50000/day", 50000, 86400),
    ],
)
def test_rates_are_read_as_messages_per_period(text: str, count: int, period: float) -> None:
    limit = parse_rate(text)
    assert (limit.count, limit.period) == (count, period)


@pytest.mark.parametrize("text", ["10", "ten/s", "10/fortnight", "0/s", "10 per second"])
def test_a_rate_that_is_not_one_is_a_config_error(tmp_path: Path, text: str) -> None:
    ws = workspace(tmp_path / "ws", 1, f"smtp:\n  rate_limit: {text}\n")
    with pytest.raises(ConfigError, match="rate_limit"):
        load_config(ws / "newsletter.yaml", env={})


def test_no_window_ever_holds_more_than_the_cap() -> None:
    now = [1000.0]
    limiter = Limiter(
        parse_rate("10/s"),
        "smtp.rate_limit",
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    times = []
    for _ in range(35):
        limiter.acquire(1)
        times.append(now[0])
    assert times[-1] - times[0] >= 3.0
    assert all(sum(1 for t in times if start <= t < start + 1.0) <= 10 for start in times)


def test_a_daily_cap_counts_earlier_sends_and_says_when_to_resume() -> None:
    now = 1_000_000.0
    limiter = Limiter(
        parse_rate("5/day"), "sendgrid.rate_limit", [now - 3600] * 3, clock=lambda: now
    )
    limiter.acquire(2)
    with pytest.raises(RateLimitReached, match=r"run the same command again after \d{4}-") as info:
        limiter.acquire(1)
    assert info.value.resume_at.timestamp() >= now - 3600 + 86400


def test_an_smtp_send_keeps_to_the_rate_over_every_connection(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 30, "smtp:\n  rate_limit: 20/s\n  connections: 4\n")
    with PipeliningServer() as server:
        started = time.monotonic()
        report = send_issue(
            config(ws, smtp_env(server.port)),
            ws / SAMPLE,
            ws / "list.csv",
            SendOptions(provider="smtp"),
        )
        took = time.monotonic() - started
    assert report.sent == 30 and len(server.messages) == 30
    assert took >= 0.95  # 20 at once, the other 10 a second later
    # The limiter grants the second 20 no earlier than a second after it started, and a
    # loaded machine only delays arrivals: so the first second holds at most 20 whatever the
    # load (a window over arrivals would count delayed first-second mail with the next).
    assert sum(1 for m in server.messages if m.at < started + 1.0) <= 20


def test_a_daily_cap_stops_the_send_cleanly_and_the_rerun_too(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 8, "smtp:\n  rate_limit: 5/day\n  connections: 2\n")
    with PipeliningServer() as server:
        cfg = config(ws, smtp_env(server.port))
        with pytest.raises(SendStopped, match=r"5/day \(smtp.rate_limit\) is reached") as info:
            send_issue(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
        assert "run the same command again after" in str(info.value)
        assert info.value.report.sent == 5 and len(server.messages) == 5
        with pytest.raises(SendStopped, match="is reached"):
            send_issue(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
        assert len(server.messages) == 5  # the cap counts the first send's messages
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID)["sent"] == 5
        assert "unknown" not in ledger.counts(ISSUE_ID)


def test_the_dry_run_says_how_long_the_rate_makes_the_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = workspace(tmp_path / "ws", 1200, "smtp:\n  rate_limit: 600/min\n")
    monkeypatch.chdir(ws)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    result = CliRunner().invoke(
        app, ["send", SAMPLE, "--to", "list.csv", "--dry-run", "-p", "smtp"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "600/min (smtp.rate_limit): at best 60 s" in " ".join(result.output.split())


def test_a_sendgrid_daily_cap_stops_between_requests(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 25, "sendgrid:\n  batch_size: 10\n  rate_limit: 12/day\n")
    cfg = config(
        ws, {"SENDGRID_API_KEY": sendgrid_server.api_key, "SENDGRID_API_HOST": sendgrid_server.url}
    )
    with pytest.raises(SendStopped, match=r"12/day \(sendgrid.rate_limit\) is reached"):
        send_issue(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="sendgrid"))
    # one request of 10; the next 10 do not fit today's cap, and nothing was left half done
    assert sendgrid_server.accepted_count == 1
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {"sent": 10}
