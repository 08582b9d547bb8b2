"""The ledger's fingerprints: an exact set, whatever the values and however many."""

from __future__ import annotations

import random

from newsletter.storage.fingerprints import Fingerprints


def test_it_answers_as_a_set_does_through_every_growth() -> None:
    rng = random.Random(7)
    values = [rng.getrandbits(64) - (1 << 63) for _ in range(30_000)]
    values += [0, 1, -1, -(1 << 63), (1 << 63) - 1]  # 0 is the empty mark: still a value
    prints, model = Fingerprints(), set()
    for start in range(0, len(values), 1000):
        chunk = values[start : start + 1000]
        prints.add(chunk + chunk[:10])  # a value added twice is there once
        model.update(chunk)
        probe = chunk[::3] + [rng.getrandbits(64) - (1 << 63) for _ in range(200)]
        assert prints.hits(probe) == [i for i, v in enumerate(probe) if v in model or v == 0]
    assert len(prints) == len(model - {0, 1}) + 1  # 0 and 1 share a slot: a "maybe" for both


def test_an_empty_set_has_nothing() -> None:
    assert Fingerprints().hits([5, -5, 1 << 40]) == []
