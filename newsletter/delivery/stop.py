"""Stopping a send on Ctrl-C or SIGTERM without losing track of anyone.

A signal handler that raised in the middle of the send could land anywhere: between the
ledger's `pending` mark and the request, or while an answer is on its way, and those
recipients would end `unknown`. So the first signal only asks the send to stop: it takes
no new batch, waits (a bounded time) for the answers of the requests already out, records
them, and raises `SendInterrupted` with its report. A second Ctrl-C stops at once.

`newsletter cancel` stops a send waiting in the foreground for its time (`send --at`) from
another process the same way: `stop_waiting` sends it SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from newsletter.config import Config
from newsletter.errors import ExitCode
from newsletter.storage.store import still_waiting
from newsletter.storage.waiting import WaitingSend

#: Seconds a stopping send waits for the answers of requests already out; a request still
#: unanswered then is recorded `unknown`. Well within a service manager's stop timeout
#: (systemd's default is 90 s).
GRACE_SECONDS = 30.0
#: How long `cancel` waits for a signalled send to stop waiting (it stops within moments).
STOP_WAIT_SECONDS = 15.0


class StopRequest:
    """Set from a signal handler; read by the send between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None

    def request(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def sleep(self, seconds: float) -> None:
        """A backoff wait that a stop cuts short."""
        self._event.wait(seconds)

    @property
    def what(self) -> str:
        return "SIGTERM" if self.signum == signal.SIGTERM else "Ctrl-C"

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.TERMINATED if self.signum == signal.SIGTERM else ExitCode.INTERRUPTED


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While inside, SIGINT and SIGTERM ask for a stop; a second Ctrl-C raises at once."""
    stop = StopRequest()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.request(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stop_waiting(config: Config, send: WaitingSend, what: str) -> str | None:
    """SIGTERM to the process of a send waiting for its time, only while it still holds its
    record, then wait for it to end; None once it has, else why it was not stopped.

    The process is pinned first (a pidfd, on Linux), then the record's lock is checked: if it
    is still held, the pinned process is the one waiting (a PID is not reused while its
    process lives), and a pidfd's signal can reach no other process even if it ends meanwhile.
    """
    what = f"{what} (pid {send.pid}"
    if send.host != socket.gethostname():
        return (
            f"{what} on {send.host}) waits on another machine: stop it there "
            f"(`newsletter cancel {send.issue}` on {send.host}, or Ctrl-C in its terminal)"
        )
    what += ")"
    ended = (
        f"{what} stopped waiting before it could be signalled: its time came (it is sending) "
        f"or something else stopped it; `newsletter status {send.issue}` shows which"
    )
    try:
        pidfd = _pin(send.pid)
    except ProcessLookupError:
        return ended
    try:
        if not still_waiting(config, send):
            return ended
        try:
            _signal(send.pid, pidfd)
        except ProcessLookupError:
            return ended
        except PermissionError:
            return (
                f"{what} belongs to another user, whom this one may not signal: stop it as "
                f"that user (`newsletter cancel {send.issue}`), or Ctrl-C in its terminal"
            )
    finally:
        if pidfd is not None:
            os.close(pidfd)
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while still_waiting(config, send):
        if time.monotonic() > deadline:
            return (
                f"{what} was sent SIGTERM but still waits after {STOP_WAIT_SECONDS:.0f} s; "
                f"stop it with `kill {send.pid}` or Ctrl-C in its terminal"
            )
        time.sleep(0.02)
    return None


def _pin(pid: int) -> int | None:
    """A pidfd for `pid` (Linux), or None where there is none: then a plain kill, made
    right after the lock check."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise
    except OSError:  # pidfds unsupported (an old kernel, a sandbox)
        return None


def _signal(pid: int, pidfd: int | None) -> None:
    if pidfd is not None and hasattr(signal, "pidfd_send_signal"):
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
    else:
        os.kill(pid, signal.SIGTERM)
