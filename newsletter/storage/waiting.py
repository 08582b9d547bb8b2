"""Sends waiting in the foreground for their time (`send --at` through SMTP or the outbox).

Such a send is a process, not a ledger row: nothing is recorded until its time comes. So
that `newsletter status` can show it and `newsletter cancel` can stop it, the waiting
process keeps a small record, `state_dir/waiting/<issue>.<token>.json`, and holds an
`flock` on it while it waits. The lock is what says the record is alive: the kernel drops it
when its holder ends in any way (a SIGKILL too), whereas a PID alone can be taken by another
process later. The record is written whole (a locked temporary file renamed into place, so a
reader never sees it unlocked or half written) and removed when the wait ends; one left by a
killed process is unlocked, never shown, and removed by the next reader. The token makes
every record's name new, so removing a dead one never removes a live one.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from newsletter.errors import LedgerError

FOLDER = "waiting"
_TEMP = ".tmp"
#: A temporary record older than this and unlocked was left by a process killed while
#: writing it (a live writer renames it within microseconds).
_STALE_TEMP_S = 60.0


@dataclass(frozen=True)
class WaitingSend:
    """A `send --at` process waiting for its time: what it will send, when, and who it is."""

    issue: str
    provider: str
    send_at: str  # ISO 8601, UTC
    pid: int
    host: str
    started_at: str  # ISO 8601, UTC
    token: str  # names its record

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "state": "waiting in the foreground"}


def _folder(state_dir: Path) -> Path:
    return state_dir / FOLDER


def _path(state_dir: Path, send: WaitingSend) -> Path:
    return _folder(state_dir) / f"{send.issue}.{send.token}.json"


@contextmanager
def hold_waiting(
    state_dir: Path, issue: str, provider: str, send_at: datetime
) -> Iterator[WaitingSend]:
    """Show this process as waiting to send `issue` at `send_at` until the block ends."""
    if not issue or issue in (".", "..") or "/" in issue or "\0" in issue:
        raise LedgerError(f"{issue!r} is not an issue id that can name a file")
    send = WaitingSend(
        issue=issue,
        provider=provider,
        send_at=send_at.astimezone(UTC).isoformat(),
        pid=os.getpid(),
        host=socket.gethostname(),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        token=secrets.token_hex(8),
    )
    path = _path(state_dir, send)
    temp = path.with_name(f"{path.name}{_TEMP}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        raise LedgerError(f"{temp}: cannot record the waiting send: {e.strerror}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a new name: nobody else holds it
            os.write(fd, json.dumps(asdict(send)).encode())
            os.replace(temp, path)
        except OSError as e:
            temp.unlink(missing_ok=True)
            raise LedgerError(f"{path}: cannot record the waiting send: {e.strerror}") from e
        try:
            yield send
        finally:
            path.unlink(missing_ok=True)  # before the lock goes: never seen unlocked
    finally:
        os.close(fd)


def _held(fd: int) -> bool:
    """Whether another process holds the record's lock, i.e. is alive and still waiting."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _read_live(path: Path) -> WaitingSend | None:
    """The record at `path` if its process still waits; a dead one's record is removed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # its wait ended meanwhile
        return None
    try:
        if not _held(fd):
            with suppress(OSError):  # a folder this user may not write: still not shown
                path.unlink(missing_ok=True)
            return None
        text = os.pread(fd, 65536, 0)
    finally:
        os.close(fd)
    try:
        given = json.loads(text)
        return WaitingSend(**{f.name: given[f.name] for f in fields(WaitingSend)})
    except (ValueError, TypeError, KeyError):  # not one of ours: nothing to show or stop
        return None


def waiting_sends(state_dir: Path, issue: str | None = None) -> list[WaitingSend]:
    """The sends (of `issue`, or of every issue) whose process waits now, soonest first."""
    folder = _folder(state_dir)
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise LedgerError(f"{folder}: cannot read the waiting sends: {e.strerror}") from e
    found = []
    for name in names:
        path = folder / name
        if name.endswith(_TEMP):
            _remove_stale_temp(path)
        elif name.endswith(".json"):
            send = _read_live(path)
            if send is not None and (issue is None or send.issue == issue):
                found.append(send)
    return sorted(found, key=lambda s: (s.send_at, s.started_at))


def _remove_stale_temp(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with suppress(OSError):
            if time.time() - os.fstat(fd).st_mtime > _STALE_TEMP_S and not _held(fd):
                path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def still_waiting(state_dir: Path, send: WaitingSend) -> bool:
    """Whether the process of `send` still holds its record: alive, and still waiting.

    While this is true its PID cannot belong to any other process, which is what lets
    `cancel` signal it safely (see `delivery.stop.stop_waiting`).
    """
    try:
        fd = os.open(_path(state_dir, send), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        return _held(fd)
    finally:
        os.close(fd)
