"""Running `newsletter` commands in tests: in process through `CliRunner` (exit code and
message), or as a process of its own where a kill, a lock or a file-size limit needs one."""

from __future__ import annotations

import os
import signal
import socketserver
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from newsletter.cli import app
from tests.sending import SECRET, workspace
from tests.workspace import SAMPLE

#: What a workspace must not inherit from the shell that runs the tests.
PROVIDER_ENV = ("NEWSLETTER_SECRET", "SENDGRID_API_KEY", "SMTP_PASSWORD", "NEWSLETTER_PROVIDER")


def bare_workspace(root: Path, monkeypatch: pytest.MonkeyPatch, n: int = 5) -> Path:
    """A workspace with `n` readers as the current folder, and no secret or provider set."""
    ws = workspace(root, n)
    monkeypatch.chdir(ws)
    for name in PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)
    return ws


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def said(result: Result) -> str:
    """What the user saw, with rich's line wrapping undone."""
    return " ".join(result.output.split())


def assert_clean_exit(result: Result, code: int) -> None:
    """Our error and our exit code: never a traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit) or result.exception is None, repr(
        result.exception
    )


def files_under(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


def ctrl_c_at_its_default() -> None:
    """`preexec_fn` for a child that must answer Ctrl-C: SIGINT at its default, not ignored.

    A shell's background job (how CI and tools start commands) runs with SIGINT ignored, and
    a child inherits that; Python then installs no KeyboardInterrupt handler, and a SIGINT
    the test sends is lost, so the test would wait for an exit that never comes.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def spawned(args: Sequence[str], **options: Any) -> Iterator[subprocess.Popen[Any]]:
    """`with subprocess.Popen(...)`, but a child still running at the end is killed first.

    Popen's own exit waits for the child without a limit: when a `communicate(timeout=...)`
    in the block times out, the test fails with that timeout instead of hanging.
    """
    with subprocess.Popen(args, preexec_fn=ctrl_c_at_its_default, **options) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def start_send(ws: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """`newsletter send` as a process of its own, as a user (or cron) runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "send", SAMPLE, "--to", "list.csv", "--yes", *args],
        cwd=ws,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(ready: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the send never got that far"
        time.sleep(0.01)


def smtp_env(server_port: int, **extra: str) -> dict[str, str]:
    """An SMTP server on 127.0.0.1 without TLS, and the token secret (`extra` may change it)."""
    return {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(server_port),
        "SMTP_SECURITY": "none",
        "NEWSLETTER_SECRET": SECRET,
        **extra,
    }


def free_port() -> int:
    """A port nobody listens on: a connection to it is refused."""
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as s:
        return int(s.server_address[1])
