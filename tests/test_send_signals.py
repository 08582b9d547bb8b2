"""Ctrl-C and SIGTERM mid-send, with the real CLI as a subprocess (issue 11, item 11).

The send takes no new batch, waits for the answers of the requests already out, records
them, prints its report and the command that resumes, and exits 130 (Ctrl-C) or 143
(SIGTERM); its row in the ledger ends `stopped`. The SendGrid-like server answers slowly,
so requests are out when the signal comes.
"""

from __future__ import annotations

import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from newsletter.storage.ledger import Ledger
from tests.commands import spawned
from tests.sending import ISSUE_ID, SECRET, workspace
from tests.servers.sendgrid import SendGridServer, slow
from tests.workspace import SAMPLE

NEWSLETTER = Path(sys.executable).with_name("newsletter")
READERS = 40


def env(server: SendGridServer) -> dict[str, str]:
    return {
        **os.environ,
        "NEWSLETTER_SECRET": SECRET,
        "SENDGRID_API_KEY": server.api_key,
        "SENDGRID_API_HOST": server.url,
    }


def wait_for(condition: object, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_send_settles_what_is_out_and_says_how_to_resume(
    tmp_path: Path, sendgrid_server: SendGridServer, signum: int, code: int
) -> None:
    ws = workspace(tmp_path / "ws", READERS, "sendgrid:\n  batch_size: 5\n")
    sendgrid_server.inject(*[slow(0.3)] * 8)
    args = [str(NEWSLETTER), "send", SAMPLE, "--to", "list.csv", "--yes", "-p", "sendgrid"]
    with spawned(
        args, cwd=ws, env=env(sendgrid_server), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        wait_for(lambda: sendgrid_server.requests >= 2)  # requests are out, unanswered
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    stdout, stderr = out.decode(), err.decode()

    assert proc.returncode == code, (stdout, stderr)
    assert "Traceback" not in stderr
    accepted = sendgrid_server.recipients
    assert 0 < accepted < READERS  # the requests out were answered; no new batch was taken
    resume = next(line for line in stdout.splitlines() if line.startswith("To resume: "))
    assert resume == (f"To resume: newsletter send {SAMPLE} --to list.csv --provider sendgrid"), (
        stdout
    )
    assert f"Sent      {accepted} in" in stdout
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {"sent": accepted}  # none pending, none unknown
        (send,) = ledger.sends(ISSUE_ID)
    assert send.status == "stopped"

    words = shlex.split(resume.removeprefix("To resume: "))
    again = subprocess.run(
        [str(NEWSLETTER), *words[1:], "--yes"],
        cwd=ws,
        env=env(sendgrid_server),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr
    delivered = sendgrid_server.delivered_to()
    assert delivered == {f"reader{i:05d}@example.com": 1 for i in range(READERS)}


def test_ctrl_c_at_the_confirmation_exits_130_and_sends_nothing(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 3)
    controller, terminal = pty.openpty()  # a terminal on stdin: send asks to confirm
    try:
        with spawned(
            [str(NEWSLETTER), "send", SAMPLE, "--to", "list.csv"],
            cwd=ws,
            env={**os.environ, "NEWSLETTER_SECRET": SECRET},
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as proc:
            assert proc.stdout is not None
            seen = b""
            deadline = time.monotonic() + 30
            while b"[y/N]" not in seen:
                assert time.monotonic() < deadline, seen
                if select.select([proc.stdout], [], [], 0.1)[0]:
                    seen += os.read(proc.stdout.fileno(), 4096)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
    finally:
        os.close(controller)
        os.close(terminal)
    assert proc.returncode == 130, err
    assert "nothing was sent" in err.decode()
    assert not (ws / "outbox" / "new").exists() or not list((ws / "outbox" / "new").iterdir())


def test_a_stop_waits_for_answers_only_a_bounded_time(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    """Answers that do not come within the grace are recorded `unknown`, not waited for."""
    from newsletter.config import load_config
    from newsletter.delivery.send import SendOptions, send_issue
    from newsletter.delivery.stop import StopRequest
    from newsletter.errors import SendInterrupted

    ws = workspace(tmp_path / "ws", 10, "sendgrid:\n  batch_size: 5\n")
    sendgrid_server.inject(slow(2.0), slow(2.0))
    cfg = load_config(ws / "newsletter.yaml", env=env(sendgrid_server))
    stop = StopRequest()
    threading.Thread(
        target=lambda: (wait_for(lambda: sendgrid_server.requests >= 2), stop.request(15)),
        daemon=True,
    ).start()
    started = time.monotonic()
    with pytest.raises(SendInterrupted) as stopped:
        send_issue(
            cfg,
            ws / SAMPLE,
            ws / "list.csv",
            SendOptions(provider="sendgrid", stop_grace=0.3),
            stop=stop,
        )
    assert time.monotonic() - started < 1.5  # not the 2 s the answers take
    assert stopped.value.exit_code == 143
    assert stopped.value.report.unknown == 10
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {"unknown": 10}
        assert ledger.sends(ISSUE_ID)[0].status == "stopped"
