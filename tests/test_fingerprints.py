"""The ledger's fingerprints: a set that never misses what it holds, and rarely says maybe."""

from __future__ import annotations

import random

from newsletter.storage.fingerprints import Fingerprints


def test_it_holds_everything_added_through_every_growth() -> None:
    rng = random.Random(7)
    values = [rng.getrandbits(64) - (1 << 63) for _ in range(30_000)]
    values += [0, 1, -1, 1 << 32, -(1 << 63), (1 << 63) - 1]  # 0 is the empty mark: a value
    prints, added = Fingerprints(), []
    for start in range(0, len(values), 1000):
        chunk = values[start : start + 1000]
        prints.add(chunk + chunk[:10])  # a value added twice is there once
        added += chunk
        assert prints.hits(added) == list(range(len(added)))
    strangers = [rng.getrandbits(64) for _ in range(100_000)]
    # A stranger is a "maybe" with a chance of n in 2^32: 0.7 expected here, not hundreds.
    assert len(prints.hits(strangers)) <= 5
    assert len(prints) <= len(set(values))


def test_an_empty_set_has_nothing() -> None:
    assert Fingerprints().hits([5, -5, 1 << 40]) == []
