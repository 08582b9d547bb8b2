"""Stopping a send on Ctrl-C or SIGTERM without losing track of anyone.

A signal handler that raised in the middle of the send could land anywhere: between the
ledger's `pending` mark and the request, or while an answer is on its way, and those
recipients would end `unknown`. So the first signal only asks the send to stop: it takes
no new batch, waits (a bounded time) for the answers of the requests already out, records
them, and raises `SendInterrupted` with its report. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from newsletter.errors import ExitCode

#: Seconds a stopping send waits for the answers of requests already out; a request still
#: unanswered then is recorded `unknown`. Well within a service manager's stop timeout
#: (systemd's default is 90 s).
GRACE_SECONDS = 30.0


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
