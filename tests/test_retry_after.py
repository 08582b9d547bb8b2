"""A Retry-After is the provider's word for the whole account, whichever batch heard it.

With several requests out, the answers come back in any order; these tests pin the order
down with a provider of our own (the `Provider` interface, no client library involved) so
that what must hold in every order is checked in each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from newsletter.delivery.batches import BatchSender, Retries
from newsletter.delivery.message import Recipient
from newsletter.delivery.providers import Sent
from newsletter.delivery.report import Report
from newsletter.errors import TransientProviderError

NO_BACKOFF = Retries(backoff=0.0, max_backoff=0.0)


class Scripted:
    """A provider whose first answer per batch is scripted: batch "b" is rate-limited for 7 s
    and only then is batch "a" refused with a 500, so "a" is settled (in start order) after
    the 429 has arrived. Every later request is accepted."""

    name = "scripted"
    batch_size = 1
    concurrency = 2

    def __init__(self) -> None:
        self.limited = threading.Event()
        self.seen: set[str] = set()

    def send(self, batch: Sequence[Recipient]) -> Sent:
        key = batch[0].key
        first = key not in self.seen
        self.seen.add(key)
        if first and key == "b":
            self.limited.set()
            raise TransientProviderError("429", status=429, retry_after=7.0)
        if first and key == "a":
            self.limited.wait(5)
            time.sleep(0.2)  # for the 429 to make its way out of "b"'s worker thread
            raise TransientProviderError("500", status=500)
        return Sent(provider_id=key)

    def close(self) -> None:
        pass


def reader(key: str) -> Recipient:
    return Recipient(key, f"{key}@example.com", "", {})


def test_a_retry_waits_out_a_retry_after_that_another_batch_heard() -> None:
    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    report = Report("issue", "subject", "scripted", "list.csv")
    with ThreadPoolExecutor(max_workers=2) as pool:
        sender = BatchSender(
            provider=Scripted(),
            ledger=None,
            send_id=0,
            issue="issue",
            retries=NO_BACKOFF,
            report=report,
            on_progress=None,
            known_secrets=[],
            sleep=sleep,
            clock=lambda: now[0],
            pool=pool,
        )
        sender.send([reader("a")], None)
        sender.send([reader("b")], None)
        sender.drain(None)
    assert report.sent == 2 and report.retries == 2
    # "a" (a 500, no Retry-After of its own) is retried only after the 7 s "b" was told,
    # and "b", settled after that wait, is not made to wait them again
    assert waits == [7.0, 0.0]
