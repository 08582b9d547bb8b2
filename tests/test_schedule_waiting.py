"""A `send --at` waiting in the foreground (SMTP, the outbox): `status` shows it while its
process waits, and only then; `cancel` stops it with SIGTERM, nothing sent and the ledger
untouched. Each send is the real CLI in a process of its own; SMTP against aiosmtpd on
127.0.0.1. The waits are minutes long and end by a signal: no assertion is timed."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest

from newsletter.storage.ledger import Ledger
from newsletter.storage.waiting import hold_waiting, still_waiting, waiting_sends
from tests.commands import bare_workspace, cli, said, smtp_env, spawned
from tests.sending import ISSUE_ID, SECRET
from tests.servers.smtp import SMTPServer
from tests.workspace import SAMPLE

NEWSLETTER = Path(sys.executable).with_name("newsletter")


def in_ten_minutes() -> datetime:
    return (datetime.now(UTC) + timedelta(minutes=10)).replace(microsecond=0)


@contextmanager
def waiting_send(
    ws: Path, provider: str, at: datetime, env: dict[str, str]
) -> Iterator[tuple[Any, IO[bytes]]]:
    """`newsletter send --at` as its own process, its output in a file (a pipe nobody reads
    could fill up and stall it), killed at the end if still running."""
    command = [str(NEWSLETTER), "send", SAMPLE, "--to", "list.csv", "--yes", "-p", provider]
    with (
        (ws.parent / f"{provider}-send.out").open("w+b") as out,
        spawned(
            [*command, "--at", at.isoformat()],
            cwd=ws,
            env={**os.environ, "NEWSLETTER_SECRET": SECRET, "COLUMNS": "200", **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        ) as proc,
    ):
        yield proc, out


def output(out: IO[bytes]) -> str:
    out.seek(0)
    return " ".join(out.read().decode(errors="replace").split())


def status_json() -> dict[str, Any]:
    result = cli("status", ISSUE_ID, "--json")
    assert result.exit_code == 0, result.output
    found: dict[str, Any] = json.loads(result.output)
    return found


def shown_waiting(proc: Any) -> list[dict[str, Any]]:
    """Poll `newsletter status --json` until it shows the process waiting (a bound for a
    broken feature, not a timing)."""
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the send ended instead of waiting"
        result = cli("status", ISSUE_ID, "--json")
        if result.exit_code == 0 and (waiting := json.loads(result.output)["waiting"]):
            assert isinstance(waiting, list)
            return waiting
        assert time.monotonic() < deadline, result.output
        time.sleep(0.05)


def records(ws: Path) -> list[Path]:
    return sorted((ws / ".newsletter" / "waiting").glob("*.json"))


def test_status_shows_an_outbox_send_waiting_and_cancel_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = bare_workspace(tmp_path / "ws", monkeypatch, 3)
    at = in_ten_minutes()
    with waiting_send(ws, "outbox", at, {}) as (proc, out):
        [waiting] = shown_waiting(proc)
        assert waiting == {
            "issue": ISSUE_ID,
            "provider": "outbox",
            "send_at": at.isoformat(),
            "pid": proc.pid,
            "host": socket.gethostname(),
            "started_at": waiting["started_at"],
            "token": waiting["token"],
            "state": "waiting in the foreground",
        }
        found = status_json()
        assert found["sends"] == [] and found["scheduled"] == []  # the ledger saw nothing
        shown = said(cli("status", ISSUE_ID))
        assert f"Waiting: a send via outbox at {at:%Y-%m-%d %H:%M}" in shown
        assert f"pid {proc.pid} on {socket.gethostname()}, waiting in the foreground" in shown
        assert f"`newsletter cancel {ISSUE_ID}` stops it" in shown
        every = cli("status", "--json")  # of every issue: what is still to go out
        assert every.exit_code == 0, every.output
        assert json.loads(every.output) == {"waiting": [waiting], "scheduled": []}
        assert f"Waiting: {ISSUE_ID}: a send via outbox at" in said(cli("status"))

        cancelled = cli("cancel", ISSUE_ID)
        assert cancelled.exit_code == 0, cancelled.output
        assert f"Stopped the send via outbox waiting for {at:%Y-%m-%d %H:%M}" in said(cancelled)
        assert f"(pid {proc.pid}): nothing was sent" in said(cancelled)
        proc.wait(timeout=60)  # cancel waited for it to stop: this returns at once
        text = output(out)
    assert proc.returncode == 143, text
    assert "stopped by SIGTERM while waiting for" in text and "nothing was sent" in text
    assert not (ws / "outbox").exists() or not any((ws / "outbox").rglob("*.eml"))
    assert not (ws / ".newsletter" / "ledger.sqlite").exists()  # nothing recorded
    assert records(ws) == []
    after = cli("status", ISSUE_ID)
    assert after.exit_code == 1 and "nothing has been sent from this workspace" in said(after)
    again = cli("cancel", ISSUE_ID)
    assert again.exit_code == 1
    assert f"no send of {ISSUE_ID} waits in the foreground" in said(again)


def test_cancel_stops_an_smtp_send_waiting_and_leaves_the_ledger_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp_server: SMTPServer
) -> None:
    ws = bare_workspace(tmp_path / "ws", monkeypatch, 4)
    rehearsal = cli("send", SAMPLE, "--to", "list.csv", "--yes", "-p", "outbox")
    assert rehearsal.exit_code == 0, rehearsal.output  # a ledger with a send of the issue
    ledger_path = ws / ".newsletter" / "ledger.sqlite"
    with Ledger(ledger_path) as ledger:
        sends_before = ledger.sends(ISSUE_ID)
    at = in_ten_minutes()
    with waiting_send(ws, "smtp", at, smtp_env(smtp_server.port)) as (proc, out):
        [waiting] = shown_waiting(proc)
        assert (waiting["provider"], waiting["pid"], waiting["send_at"]) == (
            "smtp",
            proc.pid,
            at.isoformat(),
        )
        assert waiting["state"] == "waiting in the foreground"
        found = status_json()
        assert [s["id"] for s in found["sends"]] == [s.id for s in sends_before]
        shown = said(cli("status", ISSUE_ID))
        assert f"Sends of {ISSUE_ID}" in shown and "Waiting: a send via smtp at" in shown

        cancelled = cli("cancel", ISSUE_ID, "--json")
        assert cancelled.exit_code == 0, cancelled.output
        done = json.loads(cancelled.output)
        assert done["stopped_waiting"] == [
            {
                "send_at": at.isoformat(),
                "provider": "smtp",
                "pid": proc.pid,
                "host": waiting["host"],
            }
        ]
        assert done["cancelled"] == [] and done["refused"] == []
        proc.wait(timeout=60)
        text = output(out)
    assert proc.returncode == 143, text
    assert "stopped by SIGTERM while waiting for" in text and "nothing was sent" in text
    assert smtp_server.messages == [] and smtp_server.connections == 0
    with Ledger(ledger_path) as ledger:
        assert ledger.sends(ISSUE_ID) == sends_before
        assert list(ledger.deliveries(ISSUE_ID)) == []  # no reader was ever mailed
    assert status_json()["waiting"] == []


def test_a_killed_waiting_send_is_not_shown_and_cancel_says_none_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL leaves the record behind: the lock the kernel dropped says it is dead."""
    ws = bare_workspace(tmp_path / "ws", monkeypatch, 2)
    with waiting_send(ws, "outbox", in_ten_minutes(), {}) as (proc, _out):
        shown_waiting(proc)
        proc.kill()
        proc.wait(timeout=60)
    [left] = records(ws)  # nothing ran to remove it
    result = cli("status", ISSUE_ID)
    assert result.exit_code == 1, result.output  # not waiting, and the ledger saw nothing
    assert "Waiting" not in result.output
    assert "nothing has been sent from this workspace" in said(result)
    assert not left.exists()  # the reader cleared the dead record
    assert said(cli("status")) == "Nothing waits or is scheduled to go out."
    cancelled = cli("cancel", ISSUE_ID)
    assert cancelled.exit_code == 1
    assert f"no send of {ISSUE_ID} waits in the foreground" in said(cancelled)


def write_record(ws: Path, pid: int, host: str) -> Path:
    """A waiting send's record as `send --at` writes it, for a process the test chooses."""
    folder = ws / ".newsletter" / "waiting"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ISSUE_ID}.0123456789abcdef.json"
    record = {
        "issue": ISSUE_ID,
        "provider": "smtp",
        "send_at": in_ten_minutes().isoformat(),
        "pid": pid,
        "host": host,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "token": "0123456789abcdef",
    }
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def test_a_live_pid_without_the_record_lock_is_never_signalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record whose process died, its PID now another process's: not shown, not signalled."""
    ws = bare_workspace(tmp_path / "ws", monkeypatch, 2)
    with spawned([sys.executable, "-c", "import time; time.sleep(600)"]) as other:
        path = write_record(ws, other.pid, socket.gethostname())
        cancelled = cli("cancel", ISSUE_ID)
        assert cancelled.exit_code == 1
        assert f"no send of {ISSUE_ID} waits in the foreground" in said(cancelled)
        assert other.poll() is None  # still running: it was not signalled
        assert not path.exists()


def test_a_send_waiting_on_another_machine_is_shown_but_not_signalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared workspace: the record's lock is held (here by the test), its host is not this
    one, so its PID means nothing here."""
    ws = bare_workspace(tmp_path / "ws", monkeypatch, 2)
    path = write_record(ws, os.getpid(), "elsewhere.example")
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        [waiting] = status_json()["waiting"]
        assert waiting["host"] == "elsewhere.example"
        cancelled = cli("cancel", ISSUE_ID)
        assert cancelled.exit_code == 1
        assert "waits on another machine: stop it there" in said(cancelled)
        assert path.exists()
    finally:
        os.close(fd)


def test_the_record_lives_exactly_as_long_as_the_wait(tmp_path: Path) -> None:
    """The store's side, in this process: shown inside the block, gone after it, files too."""
    state = tmp_path / ".newsletter"
    at = in_ten_minutes()
    with hold_waiting(state, ISSUE_ID, "smtp", at) as send:
        assert waiting_sends(state, ISSUE_ID) == [send] == waiting_sends(state)
        assert waiting_sends(state, "2025-09-05-later") == []
        assert (send.pid, send.send_at) == (os.getpid(), at.isoformat())
        assert still_waiting(state, send)
    assert waiting_sends(state) == [] and not still_waiting(state, send)
    assert list((state / "waiting").iterdir()) == []
