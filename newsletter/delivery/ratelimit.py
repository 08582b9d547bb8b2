"""The provider's cap on messages per second, minute, hour or day (`smtp.rate_limit`,
`sendgrid.rate_limit`): one limiter per send, shared by every connection and request.

Hosted relays and SendGrid plans count messages in a window ("10/s", "600/min",
"50000/day"). The limiter keeps a sliding window of the times messages left, so that no
window of that length ever holds more than the cap (listmonk's sliding window). A daily
cap also counts what earlier sends through the same provider sent in the last day (from
the ledger), and when the wait for room would be long it stops the send, saying when to
run it again, rather than sit for hours.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from newsletter.errors import RateLimitReached

if TYPE_CHECKING:
    from newsletter.config import Config

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "day": 86400.0,
}
_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")
#: Longer than this, a wait for room stops the send instead (a daily cap, say).
MAX_WAIT_S = 120.0


@dataclass(frozen=True)
class RateLimit:
    count: int
    period: float  # seconds
    text: str

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def duration(self, messages: int, already: int = 0) -> float:
        """Seconds `messages` take at this rate at best, `already` sent in the window."""
        if messages <= 0:
            return 0.0
        room = max(self.count - already, 0)
        if messages <= room:
            return 0.0 if self.period >= 3600 else messages / self.per_second
        return math.ceil((messages - room) / self.count) * self.period


def parse_rate(text: str) -> RateLimit:
    """'10/s', '600/min', '50000/day' -> a RateLimit; ValueError says what is expected."""
    match = _PATTERN.match(text.lower())
    if not match or match.group(2) not in _UNITS or int(match.group(1)) < 1:
        raise ValueError(
            f"{text!r} is not a rate: write messages per period, e.g. 10/s, 600/min, "
            "1000/hour or 50000/day"
        )
    return RateLimit(int(match.group(1)), _UNITS[match.group(2)], text.strip())


def rate_limit(config: Config, provider: str) -> RateLimit | None:
    """The cap configured for `provider` (`smtp.rate_limit`, `sendgrid.rate_limit`), if any."""
    from newsletter.delivery.providers import PROVIDERS

    read = PROVIDERS[provider].rate_limit
    text = read(config) if read is not None else None
    return parse_rate(text) if text else None


class Limiter:
    """Waits so that no `limit.period` seconds hold more than `limit.count` messages."""

    def __init__(
        self,
        limit: RateLimit,
        setting: str,
        earlier: Iterable[float] = (),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`earlier`: when (epoch seconds) messages of earlier sends left, for a daily cap."""
        self.limit, self.setting, self.clock, self.sleep = limit, setting, clock, sleep
        now = clock()
        self.times: deque[float] = deque(sorted(t for t in earlier if t > now - limit.period))
        self.lock = threading.Lock()

    def acquire(self, n: int = 1) -> None:
        """Room for `n` messages, waiting if need be; RateLimitReached if that is too long."""
        limit = self.limit
        if n > limit.count:
            raise ValueError(f"{n} messages at once cannot fit a cap of {limit.text}")
        with self.lock:  # waiters queue here, first come first served
            while True:
                now = self.clock()
                while self.times and self.times[0] <= now - limit.period:
                    self.times.popleft()
                if len(self.times) + n <= limit.count:
                    self.times.extend([now] * n)
                    return
                wait = self.times[len(self.times) + n - limit.count - 1] + limit.period - now
                if wait > MAX_WAIT_S:
                    resume = datetime.fromtimestamp(now + wait, UTC) + timedelta(minutes=1)
                    raise RateLimitReached(
                        f"the cap of {limit.text} ({self.setting}) is reached: "
                        f"{len(self.times)} messages in the last "
                        f"{_period(limit.period)}; run the same command again after "
                        f"{resume:%Y-%m-%d %H:%M} UTC to send to the rest",
                        resume_at=resume,
                    )
                self.sleep(max(wait, 0.001))


def _period(seconds: float) -> str:
    for name, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            return f"{seconds / length:g} {name}{'s' if seconds != length else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


def describe(seconds: float) -> str:
    """A duration as a person says it: '40 s', '17 min', '3 h 20 min', '2 days'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        hours, minutes = divmod(round(seconds / 60), 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{seconds / 86400:.1f} days"
