"""A send stopped half way and run again mails no one twice: killed (a real process,
SIGKILL), its answers lost (an unknown outcome is reported, never resent unasked), or its
server unreachable (failed, and the next run sends to everyone once)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.delivery.send import SendOptions, send_issue
from newsletter.errors import SendStopped
from newsletter.storage.ledger import Ledger
from tests.commands import free_port, smtp_env, wait_for
from tests.sending import ISSUE_ID, SECRET, workspace
from tests.servers.holding import HoldingSMTP
from tests.servers.sendgrid import TEST_API_KEY, SendGridServer, slow_answer
from tests.servers.smtp import SMTPServer, drop
from tests.workspace import SAMPLE


def start_send(ws: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "newsletter",
            "send",
            SAMPLE,
            "--to",
            "list.csv",
            "--yes",
            "--json",
            *args,
        ],
        cwd=ws,
        env={**os.environ, "NEWSLETTER_SECRET": SECRET, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def kill_when(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the send never got that far"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def finish(proc: subprocess.Popen[bytes]) -> None:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)


def ledger_counts(ws: Path) -> Counter[str]:
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        return ledger.counts(ISSUE_ID)


def ledger_state(ws: Path) -> dict[str, str]:
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        return {d.key: d.status for d in ledger.deliveries(ISSUE_ID)}


def test_sendgrid_send_killed_mid_request_then_resumed(tmp_path: Path) -> None:
    """Killed with several requests out (four at once, the default): some taken by the
    server, the client told of none of them."""
    everyone = {f"reader{i:05d}@example.com" for i in range(100)}
    ws = workspace(tmp_path / "ws", 100, "sendgrid:\n  batch_size: 10\n")
    with SendGridServer("SG.resume-test-key-0123456789") as server:
        env = {"SENDGRID_API_KEY": server.api_key, "SENDGRID_API_HOST": server.url}
        # Every answer takes a while, so the kill lands while requests are out.
        server.inject(*[slow_answer(0.25)] * 10)
        proc = start_send(ws, env, "-p", "sendgrid")
        kill_when(proc, lambda: server.accepted_count >= 6)
        delivered_before = set(d.email for d in server.deliveries())
        state = ledger_state(ws)
        pending = {k for k, s in state.items() if s == "pending"}
        sent = {k for k, s in state.items() if s == "sent"}
        assert set(state.values()) == {"sent", "pending"}
        assert len(pending) in (10, 20, 30, 40)  # the batches out when the process died
        assert sent <= delivered_before <= sent | pending
        assert delivered_before - sent  # taken by the server, never heard of by the client
        assert len(delivered_before) < 100

        finish(start_send(ws, env, "-p", "sendgrid"))
        delivered = Counter(d.email for d in server.deliveries())
    assert max(delivered.values()) == 1
    after = ledger_state(ws)
    # those out at the kill are reported unknown and not mailed again; the rest sent once
    assert {k for k, s in after.items() if s == "unknown"} == pending
    assert {k for k, s in after.items() if s == "sent"} == everyone - pending
    assert everyone - pending <= set(delivered)


def test_smtp_send_killed_then_resumed(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 60)
    with SMTPServer() as server:
        env = {"SMTP_HOST": server.host, "SMTP_PORT": str(server.port), "SMTP_SECURITY": "none"}
        proc = start_send(ws, env, "-p", "smtp")
        kill_when(proc, lambda: len(server.messages) >= 20)
        finish(start_send(ws, env, "-p", "smtp"))
        received = Counter(r for m in server.messages for r in m.rcpt_tos)
    counts = ledger_counts(ws)
    assert max(received.values()) == 1, "nobody gets the issue twice"
    missing = {f"reader{i:05d}@example.com" for i in range(60)} - set(received)
    # A message in flight at the kill is `unknown`: it may or may not have arrived; there is
    # at most one per connection (smtp.connections, 4 by default). Everyone else got the
    # issue exactly once.
    assert counts["sent"] + counts["unknown"] == 60
    assert len(missing) <= counts["unknown"] <= 4


# --- unknown outcomes are never resent unasked; refused connections are ---------------------


def smtp_received(server: SMTPServer) -> Counter[str]:
    return Counter(r for m in server.messages for r in m.rcpt_tos)


def test_a_send_killed_mid_message_leaves_it_unknown_and_its_lock_blocks_nothing(
    tmp_path: Path,
) -> None:
    ws = workspace(tmp_path / "ws", 6, "smtp:\n  connections: 1\n")  # one message in flight
    holding = HoldingSMTP()
    try:
        proc = start_send(ws, smtp_env(holding.port), "-p", "smtp")
        wait_for(lambda: len(holding.received) == 1, proc)  # the first message is in flight
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    finally:
        holding.stop()
    assert ledger_counts(ws) == {"pending": 1}
    lock = ws / ".newsletter" / "locks" / f"{ISSUE_ID}.lock"
    assert f"pid={proc.pid}" in lock.read_text()  # the file stays; the kernel dropped its lock
    with SMTPServer() as server:
        rerun = start_send(ws, smtp_env(server.port), "-p", "smtp")
        out, err = rerun.communicate(timeout=60)
        assert rerun.returncode == 0, err
        report = json.loads(out)
        assert (report["sent"], report["unknown_before"]) == (5, 1)
        # reader 0's message may have arrived: never guessed, so not sent again unasked
        assert smtp_received(server) == {f"reader{i:05d}@example.com": 1 for i in range(1, 6)}
        retry = start_send(ws, smtp_env(server.port), "-p", "smtp", "--retry-unknown")
        out, err = retry.communicate(timeout=60)
        assert retry.returncode == 0, err
        assert json.loads(out)["sent"] == 1
        assert smtp_received(server)["reader00000@example.com"] == 1
    assert ledger_counts(ws) == {"sent": 6}


def test_a_smtp_server_that_drops_before_storing_is_still_unknown(tmp_path: Path) -> None:
    """The client cannot tell a crash before the queue from a lost answer after it."""
    ws = workspace(tmp_path / "ws", 4, "smtp:\n  connections: 1\n")  # reader00000 is dropped
    with SMTPServer() as server:
        server.inject(drop(stored=False))
        cfg = load_config(ws / "newsletter.yaml", env=smtp_env(server.port))
        report = send_issue(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
        assert (report.sent, report.unknown) == (3, 1)
        rerun = send_issue(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
        assert (rerun.sent, rerun.unknown_before) == (0, 1)
        assert "reader00000@example.com" not in smtp_received(server)  # reported, never guessed


@pytest.mark.parametrize("provider", ["smtp", "sendgrid"])
def test_a_refused_connection_is_failed_and_the_next_run_sends_to_everyone_once(
    tmp_path: Path, provider: str
) -> None:
    ws = workspace(tmp_path / "ws", 12, "sendgrid:\n  batch_size: 5\n")
    dead = {
        "smtp": smtp_env(free_port()),
        "sendgrid": {
            "SENDGRID_API_KEY": TEST_API_KEY,
            "SENDGRID_API_HOST": f"http://127.0.0.1:{free_port()}",
            "NEWSLETTER_SECRET": SECRET,
        },
    }[provider]
    options = SendOptions(provider=provider, max_attempts=3, backoff=0.0, max_backoff=0.0)
    with pytest.raises(SendStopped, match="gave up after 3 tries") as info:
        send_issue(
            load_config(ws / "newsletter.yaml", env=dead),
            ws / SAMPLE,
            ws / "list.csv",
            options,
            sleep=lambda s: None,
        )
    assert info.value.report.sent == 0
    # provably not delivered; SMTP marks each message as it leaves, and none left
    assert set(ledger_counts(ws)) == ({"failed"} if provider == "sendgrid" else set())
    with SendGridServer(TEST_API_KEY) as sendgrid, SMTPServer() as smtp:
        live = {
            "smtp": smtp_env(smtp.port),
            "sendgrid": {
                "SENDGRID_API_KEY": TEST_API_KEY,
                "SENDGRID_API_HOST": sendgrid.url,
                "NEWSLETTER_SECRET": SECRET,
            },
        }[provider]
        report = send_issue(
            load_config(ws / "newsletter.yaml", env=live), ws / SAMPLE, ws / "list.csv", options
        )
        got = (
            smtp_received(smtp)
            if provider == "smtp"
            else Counter(d.email for d in sendgrid.deliveries())
        )
    assert report.sent == 12 and report.unknown_before == 0
    assert got == {f"reader{i:05d}@example.com": 1 for i in range(12)}
    assert ledger_counts(ws) == {"sent": 12}
