"""Batches out to a provider and back: retries, backoff, several requests out at once,
and every outcome recorded in the ledger.

The ledger is written from the calling thread only; requests run on a pool. A batch is
`pending` in the ledger before its request leaves and is settled (`sent`, `failed`,
`unknown`, with any `rejected` recipients) after its answer, in the order batches started.
Retrying lives here, once, for every provider.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from newsletter.config import redact
from newsletter.delivery.message import Recipient
from newsletter.delivery.providers import Provider, Sent
from newsletter.delivery.report import Progress, Report
from newsletter.errors import (
    NewsletterError,
    PermanentProviderError,
    SendStopped,
    TransientProviderError,
    UnknownOutcomeError,
)
from newsletter.storage.ledger import Ledger


@dataclass(frozen=True)
class Retries:
    """How hard to try: attempts per batch, the backoff, and when unknowns stop a send."""

    max_attempts: int = 6
    backoff: float = 1.0
    max_backoff: float = 60.0
    max_unknown_in_a_row: int = 3


def retry_delay(
    retries: Retries, attempt: int, retry_after: float | None, since: float = 0.0
) -> float:
    """Exponential backoff with full jitter, never sooner than the server asked.

    `since`: seconds since the answer that asked. With several requests out, a 429 for a
    later batch is read after the wait for an earlier one, which may have covered it.
    """
    ceiling = min(retries.max_backoff, retries.backoff * 2 ** (attempt - 1))
    wait = random.uniform(0, ceiling)
    return max(wait, (retry_after or 0.0) - since)


@dataclass
class Flight:
    """A batch whose request is out: the ledger has it as pending until it is settled."""

    batch: Sequence[Recipient]
    batch_id: int
    attempt: int
    future: Future[Sent] = field(init=False)
    #: When the provider's answer came (the clock's time): the main thread may hear of it
    #: later, while it settles older batches, and a Retry-After counts from the answer.
    answered: float | None = None


class BatchSender:
    """Sends batches with retries and records every outcome in the ledger.

    Up to `provider.concurrency` requests are out at once, each on a worker thread, while
    the main thread reads and checks the next batch: the waits for the provider overlap
    each other and the work on the list. The ledger is written from the main thread only:
    a batch is pending before its request leaves, and batches are settled in the order
    they started.
    """

    def __init__(
        self,
        *,
        provider: Provider,
        ledger: Ledger | None,
        send_id: int,
        issue: str,
        retries: Retries,
        report: Report,
        on_progress: Progress | None,
        known_secrets: list[str],
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        pool: ThreadPoolExecutor,
        check_stop: Callable[[], None] = lambda: None,
        stop_deadline: Callable[[], float | None] | None = None,
    ) -> None:
        self.provider, self.ledger, self.send_id, self.issue = provider, ledger, send_id, issue
        self.retries, self.report, self.on_progress = retries, report, on_progress
        self.secrets, self.sleep, self.clock, self.pool = known_secrets, sleep, clock, pool
        self.unknown_streak = 0
        #: (key, email, reason) of every recipient whose mailbox will never take mail.
        self.hard_bounces: list[tuple[str, str, str]] = []
        self.out: deque[Flight] = deque()  # requests out, oldest first
        #: Raises if the send was asked to stop (Ctrl-C, SIGTERM): called before a retry.
        self.check_stop = check_stop
        #: When the send was asked to stop, the clock time by which answers must be in.
        self.stop_deadline = stop_deadline
        #: Whether abandon_all gave up waiting for an answer (its thread is still out).
        self.gave_up = False
        #: The clock's time before which the provider asked for no more requests: a
        #: Retry-After speaks for the account, whichever batch's answer carried it.
        self.hold_until = float("-inf")
        self._hold_lock = threading.Lock()

    def send(self, batch: Sequence[Recipient], total: int | None) -> None:
        """Send a batch once there is room: the oldest request out is settled first."""
        while len(self.out) >= self.provider.concurrency:
            self.settle(self.out.popleft(), total)
        self.out.append(self.start(batch))

    def drain(self, total: int | None) -> None:
        """Settle every request still out, oldest first."""
        while self.out:
            self.settle(self.out.popleft(), total)

    def abandon_all(self, timeout: float | None = None) -> None:
        """The send is stopping: record the answer of every request still out.

        Waits at most `timeout` seconds in all; a request whose answer has not come by then
        is recorded `unknown` (it may have been delivered).
        """
        deadline = None if timeout is None else self.clock() + timeout
        while self.out:
            left = None if deadline is None else max(deadline - self.clock(), 0.0)
            self.abandon(self.out.popleft(), left)

    def delay(self, flight: Flight, retry_after: float | None) -> float:
        """The wait before the batch's retry: its own backoff and Retry-After, and any
        Retry-After another batch has heard since (answers come back in any order)."""
        now = self.clock()
        since = 0.0 if flight.answered is None else now - flight.answered
        with self._hold_lock:
            held = self.hold_until - now
        return max(retry_delay(self.retries, flight.attempt, retry_after, since), held)

    def start(self, batch: Sequence[Recipient], attempt: int = 1) -> Flight:
        """Record the batch as pending, then send it on the worker thread."""
        pairs = [(r.key, r.email) for r in batch]
        batch_id = self.ledger.begin_batch(self.send_id, self.issue, pairs) if self.ledger else 0
        self.report.batches += 1
        flight = Flight(batch, batch_id, attempt)
        flight.future = self.pool.submit(self._send, flight)
        return flight

    def _send(self, flight: Flight) -> Sent:
        """On a worker thread: the request, and when its answer (or error) came."""
        try:
            return self.provider.send(flight.batch)
        except TransientProviderError as exc:
            flight.answered = self.clock()
            if exc.retry_after:
                with self._hold_lock:
                    self.hold_until = max(self.hold_until, flight.answered + exc.retry_after)
            raise
        finally:
            if flight.answered is None:
                flight.answered = self.clock()

    def settle(self, flight: Flight, total: int | None) -> None:
        """Wait for the batch's answer and record it, retrying what is worth retrying."""
        while True:
            batch = flight.batch
            try:
                result = self._wait(flight)
            except FutureTimeout:
                # asked to stop, and the answer did not come in time: it may be delivered
                self.gave_up = True
                self._finish(
                    flight.batch_id, "unknown", error="the send stopped before an answer came"
                )
                self.report.unknown += len(batch)
                self.check_stop()
                raise
            except TransientProviderError as exc:
                self._finish(flight.batch_id, "failed", error=str(exc))
                if flight.attempt >= self.retries.max_attempts:
                    self.report.failed += len(batch)
                    raise SendStopped(
                        self._clean(
                            f"{exc}; gave up after {flight.attempt} tries. Nobody in that batch "
                            "got the issue: run the same command later to send to everyone who "
                            "has not"
                        ),
                        self.report,
                    ) from None
                self.report.retries += 1
                self.sleep(self.delay(flight, exc.retry_after))
                try:
                    self.check_stop()
                except BaseException:
                    self.report.failed += len(batch)  # recorded failed: the next run sends it
                    raise
                flight = self.start(batch, flight.attempt + 1)
                continue
            except UnknownOutcomeError as exc:
                self._finish(flight.batch_id, "unknown", error=str(exc))
                self.report.unknown += len(batch)
                self.unknown_streak += 1
                if self.unknown_streak >= self.retries.max_unknown_in_a_row:
                    raise SendStopped(
                        self._clean(
                            f"{exc}. That is {self.unknown_streak} batches in a row with no "
                            "answer, so the send stopped; check the provider, then rerun "
                            "(recipients whose outcome is unknown are resent only with "
                            "--retry-unknown)"
                        ),
                        self.report,
                    ) from None
                return
            except PermanentProviderError as exc:
                self._finish(flight.batch_id, "failed", error=str(exc))
                self.report.failed += len(batch)
                raise SendStopped(self._clean(str(exc)), self.report) from None
            except NewsletterError as exc:
                # ours, raised while building the request (a header we refuse): nothing left
                self._finish(flight.batch_id, "failed", error=str(exc))
                self.report.failed += len(batch)
                raise
            except BaseException:
                # interrupted while waiting: the request may be out
                self._finish(flight.batch_id, "unknown", error="interrupted while sending")
                self.report.unknown += len(batch)
                raise
            self._record(flight, result, total)
            return

    def _wait(self, flight: Flight) -> Sent:
        """The batch's answer; once a stop is asked, only until its deadline (FutureTimeout)."""
        if self.stop_deadline is None:
            return flight.future.result()
        while True:
            deadline = self.stop_deadline()
            if deadline is not None:
                return flight.future.result(max(deadline - self.clock(), 0.0))
            try:
                return flight.future.result(0.1)  # wake now and then to notice a stop
            except FutureTimeout:
                continue

    def abandon(self, flight: Flight, timeout: float | None = None) -> None:
        """The send is stopping with a request out: wait for it and record it, no retries."""
        try:
            result = flight.future.result(timeout)
        except FutureTimeout:
            self.gave_up = True
            self._finish(
                flight.batch_id,
                "unknown",
                error=f"the send stopped and no answer came within {timeout or 0:.0f} s",
            )
            self.report.unknown += len(flight.batch)
        except UnknownOutcomeError as exc:
            self._finish(flight.batch_id, "unknown", error=str(exc))
            self.report.unknown += len(flight.batch)
        except NewsletterError as exc:  # refused, or never left: nothing was delivered
            self._finish(flight.batch_id, "failed", error=str(exc))
            self.report.failed += len(flight.batch)
        except BaseException:
            self._finish(flight.batch_id, "unknown", error="interrupted while sending")
            self.report.unknown += len(flight.batch)
            raise
        else:
            self._record(flight, result, None)

    def _record(self, flight: Flight, result: Sent, total: int | None) -> None:
        batch = flight.batch
        self.unknown_streak = 0
        if self.ledger:
            self.ledger.finish_batch(
                flight.batch_id, "sent", provider_id=result.provider_id, rejected=result.rejected
            )
        self.report.sent += len(batch) - len(result.rejected)
        self.report.rejected += len(result.rejected)
        if result.hard_bounces:
            emails = {r.key: r.email for r in batch}
            self.hard_bounces += [(k, emails[k], result.rejected[k]) for k in result.hard_bounces]
        if self.on_progress:
            self.on_progress(self.report.sent + self.report.rejected, total)

    def _clean(self, text: str) -> str:
        return redact(text, self.secrets)

    def _finish(self, batch_id: int, status: str, *, error: str) -> None:
        if self.ledger:
            self.ledger.finish_batch(batch_id, status, error=self._clean(error))
