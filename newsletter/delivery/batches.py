"""Batches out to a provider and back: retries, backoff, several requests out at once,
and every outcome recorded in the ledger.

The ledger is written from the calling thread only; requests run on a pool. A batch is
`pending` in the ledger before its request leaves and is settled (`sent`, `failed`,
`unknown`, with any `rejected` recipients) after its answer, in the order batches started.
Retrying lives here, once, for every provider.

Over 400 lines: the retry loop, the worker threads' per-message marks and the stop
handling all keep to that one ordering rule, and are easiest to check against it side
by side.
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
from newsletter.delivery.ratelimit import Limiter
from newsletter.delivery.report import Progress, Report
from newsletter.errors import (
    LedgerError,
    NewsletterError,
    PermanentProviderError,
    RateLimitReached,
    SendStopped,
    TransientProviderError,
    UnknownOutcomeError,
)
from newsletter.storage.store import LedgerStore


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


class _Waiting:
    def __init__(self) -> None:
        self.done = False
        self.error: LedgerError | None = None


class _GroupMarks:
    """Per-message ledger marks from the worker threads, through their own connection.

    A pending mark must be on disk before its message leaves: one fsync. Marks asked for
    while a commit is under way wait for the next one, which carries them all, and the
    sent marks ride along: with several connections, one fsync covers a message on each.
    """

    def __init__(self, ledger: LedgerStore, issue: str) -> None:
        self.ledger, self.issue = ledger, issue
        self.cond = threading.Condition()
        self.pending: list[tuple[int, str, str, _Waiting]] = []
        self.sent: list[tuple[int, str, str]] = []
        self.busy = False

    def mark(self, batch_id: int, recipient: Recipient) -> None:
        me = _Waiting()
        with self.cond:
            self.pending.append((batch_id, recipient.key, recipient.email, me))
            while not me.done:
                if self.busy:
                    self.cond.wait()
                    continue
                self.busy = True
                group, self.pending = self.pending, []
                sent, self.sent = self.sent, []
                self.cond.release()
                error: LedgerError | None = LedgerError("the pending marks were not written")
                try:
                    self.ledger.mark_messages(self.issue, [g[:3] for g in group], sent)
                    error = None
                except LedgerError as exc:
                    error = exc
                finally:  # whatever happened, no waiter goes on without its mark on disk
                    self.cond.acquire()
                    for *_, waiting in group:
                        waiting.done, waiting.error = True, error
                    self.busy = False
                    self.cond.notify_all()
        if me.error is not None:
            raise me.error

    def mark_sent(self, batch_id: int, key: str, provider_id: str) -> None:
        """Written with the next commit; the batch's settlement writes it in any case."""
        with self.cond:
            self.sent.append((batch_id, key, provider_id))


class _Marks:
    """The marks for one batch."""

    def __init__(self, group: _GroupMarks, batch_id: int, limiter: Limiter | None) -> None:
        self.group, self.batch_id, self.limiter = group, batch_id, limiter

    def pending(self, recipient: Recipient) -> None:
        if self.limiter is not None:
            self.limiter.acquire(1)
        self.group.mark(self.batch_id, recipient)

    def sent(self, key: str, provider_id: str) -> None:
        self.group.mark_sent(self.batch_id, key, provider_id)


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
        ledger: LedgerStore | None,
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
        #: The provider's cap, shared by every connection and request (`rate_limit`).
        self.limiter: Limiter | None = None
        # A provider that sends a batch as a series of messages marks each in the ledger as it
        # goes, from the worker threads, through a second connection of their own.
        self.per_message = bool(getattr(provider, "marks_each_message", False)) and bool(ledger)
        self._marks_ledger: LedgerStore | None = None
        self._group: _GroupMarks | None = None
        if self.per_message and ledger is not None:
            self._marks_ledger = ledger.for_threads()
            self._group = _GroupMarks(self._marks_ledger, issue)

    def close(self) -> None:
        """Close the workers' ledger connection, once no request is out."""
        if self._marks_ledger is not None:
            self._marks_ledger.close()
            self._marks_ledger = None

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
        if self.limiter is not None and not self.per_message:
            try:
                self.limiter.acquire(len(batch))  # per message, as each leaves, for SMTP
            except RateLimitReached as exc:
                raise SendStopped(self._clean(str(exc)), self.report) from None
        if self.ledger is None:
            batch_id = 0
        elif self.per_message:
            batch_id = self.ledger.open_batch(self.send_id, self.issue, len(batch))
        else:
            pairs = [(r.key, r.email) for r in batch]
            batch_id = self.ledger.begin_batch(self.send_id, self.issue, pairs)
        self.report.batches += 1
        flight = Flight(batch, batch_id, attempt)
        flight.future = self.pool.submit(self._send, flight)
        return flight

    def _send(self, flight: Flight) -> Sent:
        """On a worker thread: the request, and when its answer (or error) came."""
        try:
            if self._group is not None:
                marks = _Marks(self._group, flight.batch_id, self.limiter)
                return self.provider.send(flight.batch, marks)  # type: ignore[call-arg]
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
            rest = [r for r in batch if r.key in result.unsent]
            if result.unknown:
                self.unknown_streak += 1
                if self.unknown_streak >= self.retries.max_unknown_in_a_row:
                    self.report.failed += len(rest)
                    reason = next(iter(result.unknown.values()))
                    raise SendStopped(
                        self._clean(
                            f"{reason}. That is {self.unknown_streak} batches in a row with a "
                            "message left without an answer, so the send stopped; check the "
                            "provider, then rerun (recipients whose outcome is unknown are "
                            "resent only with --retry-unknown)"
                        ),
                        self.report,
                    )
            if not rest:
                return
            # The batch stopped part-way (SMTP): what was not sent is retried, or stops the send.
            error = result.error or TransientProviderError("the batch stopped early")
            if not isinstance(error, TransientProviderError):
                self.report.failed += len(rest)
                raise SendStopped(self._clean(str(error)), self.report)
            progress = len(rest) + len(result.unknown) + len(result.rejected) < len(batch)
            attempt = 1 if progress else flight.attempt + 1
            if attempt > self.retries.max_attempts:
                self.report.failed += len(rest)
                raise SendStopped(
                    self._clean(
                        f"{error}; gave up after {flight.attempt} tries. Those recipients did "
                        "not get the issue: run the same command later to send to everyone who "
                        "has not"
                    ),
                    self.report,
                )
            self.report.retries += 1
            wait = retry_delay(self.retries, attempt, error.retry_after, self._since(flight))
            with self._hold_lock:
                held = self.hold_until - self.clock()
            self.sleep(max(wait, held))
            try:
                self.check_stop()
            except BaseException:
                self.report.failed += len(rest)  # recorded failed: the next run sends them
                raise
            flight = self.start(rest, attempt)

    def _since(self, flight: Flight) -> float:
        return 0.0 if flight.answered is None else self.clock() - flight.answered

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
            self.report.failed += len(result.unsent)

    def _record(self, flight: Flight, result: Sent, total: int | None) -> None:
        batch = flight.batch
        if not result.unknown:
            self.unknown_streak = 0
        sent = len(batch) - len(result.rejected) - len(result.unknown) - len(result.unsent)
        if self.ledger:
            each: dict[str, tuple[str, str | None, str | None]] = {
                key: ("sent", provider_id, None) for key, provider_id in result.provider_ids.items()
            }
            each.update((k, ("unknown", None, self._clean(v))) for k, v in result.unknown.items())
            each.update((k, ("failed", None, self._clean(v))) for k, v in result.unsent.items())
            status = "sent" if sent or len(result.rejected) == len(batch) else "failed"
            if status == "failed" and result.unknown:
                status = "unknown"
            self.ledger.finish_batch(
                flight.batch_id,
                status,
                provider_id=result.provider_id,
                rejected=result.rejected,
                each=each,
            )
        self.report.sent += sent
        self.report.rejected += len(result.rejected)
        self.report.unknown += len(result.unknown)
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
