"""One send of an issue at a time: a second `newsletter send` of it is refused, not run."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from newsletter.errors import LedgerError


def _lock_holder(text: str) -> str:
    """'pid 4242, started 2026-11-27 07:10 UTC' from a lock file's contents, as far as known."""
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    pid = fields.get("pid", "unknown")
    try:
        started = datetime.fromisoformat(fields["started"]).strftime("%Y-%m-%d %H:%M UTC")
    except (KeyError, ValueError):
        return f"pid {pid}"
    return f"pid {pid}, started {started}"


@contextmanager
def send_lock(state_dir: Path, issue: str) -> Iterator[None]:
    """Hold the one right to send ``issue``: a second ``send`` of it is refused, not run.

    ``flock`` on ``state_dir/locks/<issue>.lock``: the kernel drops the lock when its holder
    dies, so a killed send never blocks the next one. The file is never deleted (deleting a lock
    file lets two processes lock two different files); it holds the holder's PID and start time
    only so that the refusal can say who is sending.
    """
    if not issue or issue in (".", "..") or "/" in issue or "\0" in issue:
        raise LedgerError(f"{issue!r} is not an issue id that can name a lock file")
    lock_dir = state_dir / "locks"
    path = lock_dir / f"{issue}.lock"
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise LedgerError(f"{path}: cannot create the send lock: {e.strerror}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            raise LedgerError(
                f"another `newsletter send` ({holder}) is sending issue {issue}; "
                "wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        started = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid={os.getpid()}\nstarted={started}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
