"""A set of 64-bit fingerprints in one flat array: the ledger's answer to "may this address
have a row newer than the address index?" (see `Ledger._catch_up`).

It holds the hash of every address sent since the issue's index was last brought up to
date: a million of them for a million-row send. A Python set of as many ints costs ~60 MB
(an object per entry); an SQLite table in memory cost 1-3 µs per insert, growing with its
size, which was most of what a million-row send spent in the ledger (bench/send.py). Here
an entry is 4 bytes in an array of at most four times as many slots as entries, and a probe
is a few array reads: open addressing, linear probing, kept at most half full.

A fingerprint is the low 32 bits of Python's `hash` of the address: randomised per process,
so this is a cache of one process's, rebuilt from the rows when a process starts. Two
addresses share one with a chance of 1 in 4 billion, and an address not in the set is a
"maybe" with a chance of n in 4 billion (1 in 4,000 at the ledger's bound of 2^20
entries). A "maybe" is checked against the rows themselves, so a collision costs one
look-up, never a wrong answer.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence

_FIRST_SLOTS = 1 << 12


_LOW_32 = 0xFFFFFFFF


class Fingerprints:
    """A set of 32-bit fingerprints of hashes, with cheap bulk insert and lookup."""

    def __init__(self) -> None:
        self._slots = array("I", [0]) * _FIRST_SLOTS
        self._mask = _FIRST_SLOTS - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, hashes: Iterable[int]) -> None:
        slots, mask, added = self._slots, self._mask, 0
        for h in hashes:
            h = h & _LOW_32 or 1  # 0 marks an empty slot
            i = h & mask
            while True:
                held = slots[i]
                if held == 0:
                    slots[i] = h
                    added += 1
                    break
                if held == h:
                    break
                i = (i + 1) & mask
        self._count += added
        if 2 * self._count > self._mask:
            self._grow()

    def hits(self, hashes: Sequence[int]) -> list[int]:
        """The positions in `hashes` whose fingerprints are in the set."""
        slots, mask, found = self._slots, self._mask, []
        for position, h in enumerate(hashes):
            h = h & _LOW_32 or 1
            i = h & mask
            while True:
                held = slots[i]
                if held == 0:
                    break
                if held == h:
                    found.append(position)
                    break
                i = (i + 1) & mask
        return found

    def _grow(self) -> None:
        old = self._slots
        size = 2 * (self._mask + 1)
        while 2 * self._count > size - 1:
            size *= 2
        self._slots = array("I", [0]) * size
        self._mask = size - 1
        self._count = 0
        self.add(h for h in old if h)
