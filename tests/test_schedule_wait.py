"""`send --at` through SMTP and the outbox: the command waits in the foreground, and a stop
while it waits sends nothing. SMTP against a real server (aiosmtpd) on 127.0.0.1; the
clock is injected where a test needs the time to pass, and no assertion is timed."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import load_config
from newsletter.delivery.schedule import parse_at
from newsletter.delivery.send import SendOptions, send_issue
from newsletter.delivery.stop import StopRequest
from newsletter.errors import SendInterrupted, UsageError
from newsletter.storage.ledger import Ledger
from tests.commands import smtp_env, spawned
from tests.sending import ISSUE_ID, SECRET, config, workspace
from tests.servers.smtp import SMTPServer
from tests.workspace import SAMPLE

NEWSLETTER = Path(sys.executable).with_name("newsletter")


class FakeClock:
    """Wall-clock time that moves only when the send sleeps; notes what the server had
    received at each sleep."""

    def __init__(self, start: float, server: SMTPServer) -> None:
        self.t, self.server = start, server
        self.seen: list[tuple[float, int]] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.seen.append((self.t, len(self.server.messages)))
        self.t += seconds


def test_smtp_waits_for_the_time_and_mails_nobody_before_it(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    ws = workspace(tmp_path / "ws", 6)
    start = float(int(time.time()))  # whole seconds: 3600 steps of 1.0 add up exactly
    at = datetime.fromtimestamp(start + 3600, tz=UTC)
    clock = FakeClock(start, smtp_server)
    told: list[float] = []
    report = send_issue(
        config(ws, smtp_env(smtp_server.port)),
        ws / SAMPLE,
        ws / "list.csv",
        SendOptions(provider="smtp", at=at),
        now=clock.now,
        sleep=clock.sleep,
        on_wait=told.append,
    )
    assert report.sent == 6 and len(smtp_server.messages) == 6
    assert len(clock.seen) == 3600  # a second at a time, by the wall clock
    assert all(received == 0 for _t, received in clock.seen)  # nobody before the time
    assert told[0] == 3600 and told[-1] == 0  # a countdown, then "the time has come"
    assert told[:-1] == sorted(told[:-1], reverse=True)
    assert report.send_at == at.isoformat()
    assert report.send_at_note is not None and "waited for it in the foreground" in (
        report.send_at_note
    )


def test_a_stop_while_waiting_sends_nothing_and_records_nothing(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    ws = workspace(tmp_path / "ws", 4)
    stop = StopRequest()
    clock = FakeClock(time.time(), smtp_server)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.seen) == 5:
            stop.request(signal.SIGINT)

    with pytest.raises(SendInterrupted) as stopped:
        send_issue(
            config(ws, smtp_env(smtp_server.port)),
            ws / SAMPLE,
            ws / "list.csv",
            SendOptions(provider="smtp", at=datetime.fromtimestamp(clock.t + 600, tz=UTC)),
            now=clock.now,
            sleep=sleep,
            stop=stop,
        )
    assert stopped.value.exit_code == 130
    assert "while waiting for" in str(stopped.value) and "nothing was sent" in str(stopped.value)
    assert stopped.value.report.sent == 0
    assert smtp_server.messages == [] and smtp_server.connections == 0
    assert not (ws / ".newsletter" / "ledger.sqlite").exists()


def test_the_cli_waits_a_moment_then_sends_through_smtp(
    tmp_path: Path, smtp_server: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real wait, a second or two: every delivery is recorded at or after the time."""
    ws = workspace(tmp_path / "ws", 3)
    monkeypatch.chdir(ws)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    for name, value in smtp_env(smtp_server.port).items():
        monkeypatch.setenv(name, value)
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    result = CliRunner().invoke(
        app,
        ["send", SAMPLE, "--to", "list.csv", "-p", "smtp", "--yes", "--at", at.isoformat()],
    )
    assert result.exit_code == 0, result.output
    assert len(smtp_server.messages) == 3
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        stamps = [datetime.fromisoformat(d.updated_at) for d in ledger.deliveries(ISSUE_ID)]
    assert len(stamps) == 3 and min(stamps) >= at
    assert "waited for it in the foreground" in " ".join(result.output.split())
    assert list((ws / ".newsletter" / "waiting").iterdir()) == []  # status: no longer waiting
    assert "waiting" not in CliRunner().invoke(app, ["status", ISSUE_ID]).output


def test_sigterm_while_waiting_stops_with_a_report_and_the_command_to_run_again(
    tmp_path: Path,
) -> None:
    """The real CLI in a terminal (so the countdown shows), stopped once it counts down."""
    ws = workspace(tmp_path / "ws", 3)
    at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    controller, terminal = pty.openpty()
    seen = b""
    try:
        with spawned(
            [str(NEWSLETTER), "send", SAMPLE, "--to", "list.csv", "--yes", "--at", at.isoformat()],
            cwd=ws,
            env={**os.environ, "NEWSLETTER_SECRET": SECRET, "COLUMNS": "200"},
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
        ) as proc:
            deadline = time.monotonic() + 30
            while b"(Ctrl-C: nothing is sent)" not in seen:
                assert time.monotonic() < deadline, seen
                if select.select([controller], [], [], 0.1)[0]:
                    seen += os.read(controller, 4096)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            while select.select([controller], [], [], 0.2)[0]:
                try:
                    seen += os.read(controller, 4096)
                except OSError:
                    break
    finally:
        os.close(controller)
        os.close(terminal)
    text = " ".join(seen.decode(errors="replace").split())
    assert proc.returncode == 143, text
    assert "stopped by SIGTERM while waiting for" in text and "nothing was sent" in text
    assert f"To resume: newsletter send {SAMPLE} --to list.csv --provider outbox --at" in text
    assert at.isoformat() in text  # the same time again
    assert not (ws / "outbox" / "new").exists() or not any((ws / "outbox" / "new").iterdir())


def test_times_are_read_in_the_configured_zone_and_clock_changes_are_refused(
    tmp_path: Path,
) -> None:
    ws = workspace(tmp_path / "ws", 1, "timezone: Europe/Berlin\n")
    cfg = load_config(ws / "newsletter.yaml", env={})
    assert parse_at("2026-12-04 08:00", cfg).isoformat() == "2026-12-04T08:00:00+01:00"
    assert parse_at("2026-07-04 08:00", cfg).isoformat() == "2026-07-04T08:00:00+02:00"
    assert parse_at("2026-12-04T08:00-05:00", cfg).utcoffset() == timedelta(hours=-5)
    assert (
        parse_at("2026-12-04T07:00Z", cfg).timestamp()
        == parse_at("2026-12-04 08:00", cfg).timestamp()
    )
    with pytest.raises(UsageError, match="there is no such time in Europe/Berlin"):
        parse_at("2026-03-29 02:30", cfg)
    with pytest.raises(UsageError, match=r"comes twice in Europe/Berlin.*2026-10-25T02:30\+02:00"):
        parse_at("2026-10-25 02:30", cfg)
    with pytest.raises(UsageError, match="give a date and a time"):
        parse_at("2026-12-04", cfg)


def test_without_a_timezone_setting_the_machines_zone_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        ws = workspace(tmp_path / "ws", 1)
        cfg = load_config(ws / "newsletter.yaml", env={})
        assert parse_at("2026-12-04 08:00", cfg).isoformat() == "2026-12-04T08:00:00-05:00"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_an_unknown_timezone_is_a_config_error(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 1, "timezone: Europe/Atlantis\n")
    result = CliRunner().invoke(
        app, ["--config", str(ws / "newsletter.yaml"), "send", SAMPLE, "--dry-run"]
    )
    assert result.exit_code == 1
    assert "timezone" in result.output and "IANA name such as Europe/Berlin" in result.output
