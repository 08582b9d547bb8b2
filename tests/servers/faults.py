"""Which fault the next request or transaction gets: queued ones first, then seeded chance."""

from __future__ import annotations

import collections
import random
import threading
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar


class _Labelled(Protocol):
    @property
    def label(self) -> str: ...


F = TypeVar("F", bound=_Labelled)


class FaultPlan(Generic[F]):
    """Thread-safe: handler threads draw from it while a test injects into it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[F] = collections.deque()
        self._random: tuple[random.Random, float, tuple[F, ...]] | None = None
        self._injected: collections.Counter[str] = collections.Counter()

    def inject(self, *faults: F) -> None:
        """Queue faults for the next draws, one each, in order."""
        with self._lock:
            self._queue.extend(faults)

    def random(self, seed: int, rate: float, kinds: Sequence[F]) -> None:
        """After the queue is empty, draw a fault from `kinds` with probability `rate`,
        reproducibly for `seed` (rate 0 turns it off)."""
        with self._lock:
            self._random = (random.Random(seed), rate, tuple(kinds)) if rate > 0 else None

    def draw(self) -> F | None:
        with self._lock:
            fault = self._queue.popleft() if self._queue else None
            if fault is None and self._random is not None:
                rng, rate, kinds = self._random
                if rng.random() < rate:
                    fault = rng.choice(kinds)
            if fault is not None:
                self._injected[fault.label] += 1
            return fault

    @property
    def injected(self) -> collections.Counter[str]:
        """How many of each fault were applied, by label."""
        with self._lock:
            return collections.Counter(self._injected)
