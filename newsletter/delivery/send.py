"""The send: load -> render -> personalise -> send -> record, for one issue and one list.

Every recipient is looked up in the ledger before it is batched, and `batches` records
every batch as `pending` before its request leaves and as `sent`, `failed` or `unknown`
after, so a rerun (or a resume after a crash) mails exactly those who have not had the
issue.

Over 400 lines (about 730): `dry_run`, `send_issue` and `send_test` share the classifying,
manifest, readiness and skip-log steps they are made of, and `send_issue` is one ordered
sequence of steps and their cleanup (lock, ledger row, stop request, bounces) that reads
best whole. The batch loop is `batches`, the providers are `providers/`; the skip log and
the manifest steps are what would move out next.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import TypeVar

from newsletter import __version__
from newsletter.config import Config, redact, secrets
from newsletter.content.render import PACKAGE_TEMPLATES
from newsletter.delivery.batches import BatchSender, Retries, retry_delay
from newsletter.delivery.campaign import Campaign, prepare
from newsletter.delivery.guards import content_findings, sent_under_another_id
from newsletter.delivery.manifest import sha256_file, sha256_tree
from newsletter.delivery.message import Recipient
from newsletter.delivery.output import write_atomic
from newsletter.delivery.providers import (
    PROVIDERS,
    Provider,
    Scheduled,
    address_refusal,
    open_provider,
)
from newsletter.delivery.ratelimit import Limiter, RateLimit, rate_limit
from newsletter.delivery.report import Progress, Report
from newsletter.delivery.schedule import check_at, plan_note, wait_in_foreground
from newsletter.delivery.stop import GRACE_SECONDS, StopRequest
from newsletter.errors import (
    ConfigError,
    NewsletterError,
    NothingSent,
    OutputError,
    ProviderError,
    SendInterrupted,
    SendRefused,
    SendStopped,
    TemplateError,
    TransientProviderError,
    UnknownOutcomeError,
)
from newsletter.lists.cells import CellWriter
from newsletter.lists.subscribers import (
    Skipped,
    Subscriber,
    SubscriberStream,
    read_subscribers,
)
from newsletter.lists.tokens import SECRET_ENV
from newsletter.storage.ledger import Manifest, is_rehearsal
from newsletter.storage.store import (
    LedgerStore,
    Store,
    Suppression,
    existing_ledger,
    open_existing_store,
    open_store,
)
from newsletter.words import plural

__all__ = [
    "Report",
    "SendOptions",
    "dry_run",
    "estimate_rows",
    "send_issue",
    "send_test",
]

T = TypeVar("T")
_LOOKUP_CHUNK = 1000


@dataclass(frozen=True)
class SendOptions:
    provider: str
    tags: tuple[str, ...] = ()
    templates: Path | None = None
    suppressions: Path | None = None
    retry_unknown: bool = False
    sandbox: bool = False
    max_attempts: int = 6
    backoff: float = 1.0
    max_backoff: float = 60.0
    max_unknown_in_a_row: int = 3
    #: Send although `newsletter check` finds errors in the issue.
    force: bool = False
    #: Send although the same issue was already sent under another id (a renamed file).
    as_new_issue: bool = False
    #: Seconds a stopped send waits for the answers of requests already out.
    stop_grace: float = GRACE_SECONDS
    #: Send at this time (`--at`): held by a provider that can (SendGrid), else waited for.
    at: datetime | None = None

    @property
    def retries(self) -> Retries:
        return Retries(self.max_attempts, self.backoff, self.max_backoff, self.max_unknown_in_a_row)


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def estimate_rows(path: Path) -> int | None:
    """Data rows in a list, counted as lines (fast), for the progress bar's total."""
    try:
        with path.open("rb") as fh:
            lines = sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return None
    return max(lines - 1, 0)


def suppressions_path(config: Config, options: SendOptions) -> Path:
    return options.suppressions or config.suppressions_path


class _SkipLog:
    """Every skipped row, streamed to a CSV beside the build output, so none goes unseen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(f".{path.name}.tmp")
        self.count = 0
        self._failed: OSError | None = None  # a half-written log is never published
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self._tmp.open("w", newline="", encoding="utf-8")
            self._writer = CellWriter(self._fh)  # cells from the list: never formulas
            self._writer.writerow(["line", "email", "reason", "detail"])
        except OSError as exc:
            self._tmp.unlink(missing_ok=True)
            raise self._error(exc) from None

    def _error(self, exc: OSError) -> OutputError:
        return OutputError(
            f"{self.path}: cannot write the skipped rows ({exc.strerror or exc}); "
            "free some space or fix the folder's permissions, then run the command again"
        )

    def write(self, row: Skipped) -> None:
        try:
            self._writer.writerow([row.line, row.email, row.reason.value, row.detail])
        except OSError as exc:
            self._failed = exc
            raise self._error(exc) from None
        self.count += 1

    def close(self) -> str | None:
        """Publish the log (or remove it if nothing was skipped); never leaves the `.tmp`."""
        try:
            try:
                self._fh.close()
            except OSError:
                if not self._fh.closed:  # a failed flush leaves it open: closing again works
                    self._fh.close()
                raise
            if self._failed is not None:
                raise self._failed
            if not self.count:
                self._tmp.unlink(missing_ok=True)
                self.path.unlink(missing_ok=True)
                return None
            self._tmp.replace(self.path)
        except OSError as exc:
            self._tmp.unlink(missing_ok=True)
            raise self._error(exc) from None
        return str(self.path)


def _sandboxed(options: SendOptions) -> bool:
    """A validate-only send: asked for, and the provider has such a mode."""
    return options.sandbox and PROVIDERS[options.provider].sandbox


def _readiness(config: Config, provider: str) -> list[str]:
    """What a real send would trip over, said before it is tried."""
    problems = []
    spec = PROVIDERS[provider]
    if not spec.local and not config.env.get(SECRET_ENV):
        problems.append(
            f"{SECRET_ENV} is not set: a real {provider} send would stop; "
            "set it to a long random value"
        )
    try:
        spec.ready(config)
    except ConfigError as exc:
        problems.append(str(exc))
    return problems


def _content_hashes(config: Config, issue_path: Path, options: SendOptions) -> tuple[str, str]:
    """What readers get, by content: SHA-256 of the issue file and of the templates."""
    templates = options.templates or config.templates_dir or PACKAGE_TEMPLATES
    return sha256_file(issue_path), sha256_tree(templates)


def _manifest(
    config: Config, issue_path: Path, list_path: Path, options: SendOptions, campaign: Campaign
) -> Manifest:
    issue_sha256, templates_sha256 = _content_hashes(config, issue_path, options)
    return Manifest(
        issue=campaign.issue.id,
        issue_path=str(issue_path),
        issue_sha256=issue_sha256,
        templates_sha256=templates_sha256,
        list_path=str(list_path),
        list_sha256=sha256_file(list_path),
        provider=options.provider,
        tool_version=__version__,
        dry_run=_sandboxed(options),
        title=campaign.issue.title,
        date=str(campaign.issue.date),
    )


def _changed_since(
    ledger: LedgerStore, issue: str, version: tuple[str, str], provider: str
) -> list[str]:
    """Earlier sends of the issue that mailed people another version of it: said, not refused,
    since fixing a typo before resuming a stopped send is what an editor would do. Only
    sends of the same kind count: a rehearsal (the outbox) mailed no reader."""
    issue_sha256, templates_sha256 = version
    changed: dict[int, tuple[str, str]] = {}
    for record in ledger.sends(issue):
        if is_rehearsal(record.provider) != is_rehearsal(provider):
            continue
        what = [
            name
            for name, before, now in (
                ("the issue file", record.manifest.issue_sha256, issue_sha256),
                ("the templates", record.manifest.templates_sha256, templates_sha256),
            )
            if before != now
        ]
        if what and not record.manifest.dry_run:
            changed[record.id] = (" and ".join(what), record.started_at[:16].replace("T", " "))
    if not changed:
        return []
    mailed = ledger.sent_per_send(issue)
    return [
        f"{what} changed since send {send_id} ({when} UTC), which mailed "
        f"{plural(mailed[send_id], 'recipient')}: they have the earlier version, anyone mailed "
        "now gets this one"
        for send_id, (what, when) in changed.items()
        if mailed.get(send_id)
    ]


def _classify(
    stream: Iterable[Subscriber | Skipped],
    report: Report,
    ledger: LedgerStore | None,
    campaign: Campaign,
    options: SendOptions,
    skip_log: _SkipLog,
    on_rows: Callable[[int], None] | None = None,
    bounced: frozenset[str] = frozenset(),
) -> Iterator[Recipient]:
    """Subscribers who still need this issue, as recipients; everything else is counted.

    `bounced`: keys of hard bounces the ledger holds but the store's suppressions do not have
    yet (it could not be written): refused before, so never mailed again.
    """
    issue = campaign.issue.id
    rehearsal = is_rehearsal(options.provider)
    for chunk in _chunks(stream, _LOOKUP_CHUNK):
        subscribers: list[Subscriber] = []
        report.rows += len(chunk)
        if on_rows:
            on_rows(report.rows)
        for item in chunk:
            if isinstance(item, Skipped):
                report.skip(item)
                skip_log.write(item)
            else:
                subscribers.append(item)
        report.recipients += len(subscribers)
        # `Subscriber.key` is worked out on each use: once per row here
        keys = [s.key for s in subscribers]
        known = ledger.statuses(issue, keys, rehearsal=rehearsal) if ledger and keys else {}
        for sub, key in zip(subscribers, keys, strict=True):
            state = known.get(key)
            if key in bounced:
                report.rejected_before += 1
            elif state == "sent":
                report.already_sent += 1
            elif state in ("unknown", "pending") and not options.retry_unknown:
                report.unknown_before += 1
            elif state == "rejected":
                report.rejected_before += 1
            else:
                yield campaign.recipient(sub.email, sub.name, sub.fields)


def _open_list(
    path: Path,
    config: Config,
    options: SendOptions,
    campaign: Campaign,
    suppressed: Iterable[str] = (),
) -> SubscriberStream:
    stream = read_subscribers(
        path,
        tags=options.tags,
        suppressions=suppressions_path(config, options),
        suppressed=suppressed,
        refuse=address_refusal(options.provider),
    )
    missing = campaign.missing_fields(stream.columns)
    if missing:
        stream.close()
        raise TemplateError(
            f"the templates use subscriber.{missing[0]} but {path} has no {missing[0]!r} column"
            + (f" (nor {', '.join(missing[1:])})" if len(missing) > 1 else "")
            + '; add the column or use subscriber.get("name", "fallback")'
        )
    return stream


def _nobody_mailed(report: Report, list_path: Path, options: SendOptions) -> str | None:
    """Why a send mailed (or a dry run would mail) nobody; None if someone, or if everyone
    on the list was settled by earlier sends ("already sent to everyone" is a success)."""
    mailed = report.to_send if report.dry_run else report.sent
    if mailed or (report.recipients and report.to_send == 0):
        return None
    verb = "would be mailed" if report.dry_run else "was mailed"
    if report.recipients == 0:
        if report.rows == 0:
            return f"{list_path} has no subscribers: nobody {verb}"
        reasons = ", ".join(f"{n} {reason}" for reason, n in report.skipped.most_common())
        every = "the only row" if report.rows == 1 else f"every one of the {report.rows:,} rows"
        where = f"; every skipped row is in {report.skipped_file}" if report.skipped_file else ""
        tags = (
            f" (--tag {' --tag '.join(options.tags)}: check the spelling)"
            if options.tags and report.skipped.get("not tagged")
            else ""
        )
        return f"{every} of {list_path} was skipped ({reasons}){tags}: nobody {verb}{where}"
    return (
        f"nobody was mailed: of {plural(report.to_send, 'recipient')}, {report.unknown} "
        f"{'has' if report.unknown == 1 else 'have'} an unknown outcome, {report.failed} failed "
        f"and {report.rejected} {'was' if report.rejected == 1 else 'were'} refused; "
        "`newsletter status` shows who"
    )


def _findings(
    report: Report,
    ledger: LedgerStore | None,
    campaign: Campaign,
    version: tuple[str, str] | None,
    options: SendOptions,
) -> None:
    """What `check` says of the issue, and whether it went out before under another id.

    `check`'s warnings go in the dry run's report (which the confirmation shows), not in
    every send's: a send with --yes was told them by the dry run it skipped asking for.
    """
    found = content_findings(campaign, force=options.force)
    report.refused += found.refused
    if report.dry_run:
        report.warnings += found.warnings
    if ledger and version:
        report.warnings += _changed_since(ledger, campaign.issue.id, version, options.provider)
        earlier = sent_under_another_id(ledger, campaign, version[0], options.provider)
        if options.as_new_issue:
            report.warnings += [
                f"sending as a new issue (--as-new-issue) though {e}" for e in earlier
            ]
        else:
            report.refused += earlier


def _bounced(ledger: LedgerStore | None) -> frozenset[str]:
    return (
        frozenset(key for key, *_rest in ledger.unsuppressed_bounces()) if ledger else frozenset()
    )


def dry_run(
    config: Config,
    issue_path: Path,
    list_path: Path,
    options: SendOptions,
    *,
    previews: int = 3,
    out: Path | None = None,
    on_progress: Progress | None = None,
    now: Callable[[], float] = time.time,
) -> Report:
    """Everything a send would do except sending: who, how many, and real previews.

    Opens no network connection and writes nothing but files under `build/`. `on_progress`
    hears (rows read, rows in the file) as the list is checked: a million rows take seconds.
    What a real send would refuse is in `report.refused`; a time (`options.at`) past or
    beyond what the provider holds raises UsageError.
    """
    started = time.perf_counter()
    campaign = prepare(config, issue_path, templates=options.templates, allow_local_secret=True)
    report = Report(
        campaign.issue.id, campaign.subject, options.provider, str(list_path), dry_run=True
    )
    if options.at is not None:
        check_at(options.at, options.provider, now())
        report.send_at = options.at.isoformat()
        report.send_at_note = plan_note(options.at, options.provider, campaign.issue.id, now())
    report.warnings = _readiness(config, options.provider)
    out = out or config.build_dir / "preview" / campaign.issue.id
    ledger = existing_ledger(config)
    try:
        version = _content_hashes(config, issue_path, options) if ledger else None
        _findings(report, ledger, campaign, version, options)
        bounced = _bounced(ledger)
        # Read only: a dry run creates no store, and one that exists may hold suppressions.
        store = open_existing_store(config)
        try:
            suppressed = list(store.suppressed_addresses()) if store else []
        finally:
            if store:
                store.close()
        skip_log = _SkipLog(config.build_dir / f"{campaign.issue.id}-skipped.csv")
        try:
            with _open_list(list_path, config, options, campaign, suppressed) as stream:
                shown: list[Recipient] = []
                total = estimate_rows(list_path) if on_progress else None
                on_rows = (lambda rows: on_progress(rows, total)) if on_progress else None
                recipients = _classify(
                    stream, report, ledger, campaign, options, skip_log, on_rows, bounced
                )
                for recipient in recipients:
                    if len(shown) < previews:
                        shown.append(recipient)
        finally:
            report.skipped_file = skip_log.close()
    finally:
        if ledger:
            ledger.close()
    for n, recipient in enumerate(shown, start=1):
        name = f"{n:02d}-{recipient.email.replace('/', '_')}.eml"
        report.previews.append(str(write_atomic(out / name, campaign.builder.build(recipient))))
    if shown:
        html, text = campaign.rendered.personalise(shown[0].fields)
        report.previews.append(str(write_atomic(out / "index.html", html)))
        report.previews.append(str(write_atomic(out / "index.txt", text)))
    report.batches = math.ceil(report.to_send / PROVIDERS[options.provider].batch_size(config))
    limit = rate_limit(config, options.provider)
    if limit is not None:
        report.rate_limit = f"{limit.text} ({options.provider}.rate_limit)"
        with existing_ledger(config) or nullcontext() as led:
            already = len(_earlier(limit, led, options.provider))
        report.rate_seconds = limit.duration(report.to_send, already)
    if nobody := _nobody_mailed(report, list_path, options):
        report.warnings.append(nobody)
    report.seconds = time.perf_counter() - started
    return report


def _earlier(limit: RateLimit, ledger: LedgerStore | None, provider: str) -> list[float]:
    """For a cap over hours or a day: what earlier sends through the provider used of it."""
    if ledger is None or limit.period < 3600:
        return []
    return ledger.sent_since(provider, datetime.now(UTC) - timedelta(seconds=limit.period))


def _limiter(limit: RateLimit, ledger: LedgerStore, provider: str) -> Limiter:
    return Limiter(limit, f"{provider}.rate_limit", _earlier(limit, ledger, provider))


def refuse(report: Report) -> None:
    """Raise what a real send refuses, as the dry run found it: every reason, one a line."""
    if report.refused:
        raise SendRefused(
            "\n".join([f"refusing to send {report.issue}:", *(f"  {r}" for r in report.refused)])
        )


class _Cleanup:
    """Steps that end a send, each run whatever the others did; the first error wins.

    A full disk fails everything at once: closing the skipped-rows log after the ledger
    failed must not hide the ledger's error, nor keep the send row from being closed.
    """

    def __init__(self, error: BaseException | None) -> None:
        self.error = error
        self.later: list[BaseException] = []

    def run(self, step: Callable[[], object]) -> None:
        try:
            step()
        except BaseException as exc:  # kept, and raised once every step ran
            if self.error is None:
                self.error = exc
            else:
                self.later.append(exc)


def _apply_bounces(ledger: LedgerStore, store: Store, report: Report) -> None:
    """Put hard bounces the ledger holds in the store's suppressions; say so if it cannot.

    The store is another file than the ledger (and may be another database), so its write
    can fail where the ledger's did not: the ledger keeps the bounces until it succeeds.
    """
    pending = ledger.unsuppressed_bounces()
    if not pending:
        return
    try:
        store.suppress(
            Suppression(email, reason, "bounce", "send", issue)
            for _key, email, reason, issue in pending
        )
    except (OSError, NewsletterError) as exc:
        report.warnings.append(
            f"could not add {len(pending)} hard-bounced address(es) to the suppressions "
            f"({getattr(exc, 'strerror', None) or exc}): the ledger keeps them, no send mails "
            "them, and the next send adds them"
        )
        return
    ledger.bounces_suppressed([key for key, *_rest in pending])


def send_issue(
    config: Config,
    issue_path: Path,
    list_path: Path,
    options: SendOptions,
    *,
    on_progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    stop: StopRequest | None = None,
    now: Callable[[], float] = time.time,
    on_wait: Callable[[float], None] | None = None,
) -> Report:
    """Send the issue to everyone on the list who has not had it; record each outcome.

    Refuses (SendRefused) what `check` calls an error and an issue already sent under
    another id, unless `options` override. Raises NothingSent if it mailed nobody, and
    SendInterrupted if `stop` was requested (no new batch; the requests out are settled).

    With `options.at`, a provider that holds mail (SendGrid) is handed the send now, for
    then; for any other, this waits until then by `now` (the wall clock), telling
    `on_wait` the seconds left, and a stop while it waits sends nothing.
    """
    started = time.perf_counter()
    sandbox = _sandboxed(options)
    if options.sandbox and not sandbox:
        able = " or ".join(name for name, spec in PROVIDERS.items() if spec.sandbox)
        raise ConfigError(
            f"--sandbox validates every request and delivers nothing, which {options.provider} "
            f"cannot do; use it with --provider {able}"
        )
    campaign = prepare(
        config,
        issue_path,
        templates=options.templates,
        allow_local_secret=PROVIDERS[options.provider].local,
    )
    issue = campaign.issue.id
    report = Report(issue, campaign.subject, options.provider, str(list_path), sandbox=sandbox)
    if PROVIDERS[options.provider].local:
        report.outbox = str(config.outbox_dir)
    known_secrets = secrets(config)
    if stop is not None and sleep is time.sleep:
        sleep = stop.sleep
    at = options.at
    held = at is not None and PROVIDERS[options.provider].schedule is not None
    if at is not None:
        check_at(at, options.provider, now())
        report.send_at = at.isoformat()
        report.send_at_note = plan_note(at, options.provider, issue, now())
        if not held:
            PROVIDERS[options.provider].ready(config)  # a missing setting is said now, not then
            with open_store(config) as store:  # `status` shows the wait, `cancel` stops it
                record = store.hold_waiting(issue, options.provider, at)
                wait_in_foreground(
                    at, report, record=record, stop=stop, now=now, sleep=sleep, on_wait=on_wait
                )
            started = time.perf_counter()  # the send's rate counts from its time, not the wait

    stop_at: list[float] = []

    def stop_deadline() -> float | None:
        """When a stop was first seen, plus the grace: answers after it are not waited for."""
        if stop is None or not stop.requested:
            return None
        if not stop_at:
            stop_at.append(clock() + options.stop_grace)
        return stop_at[0]

    def check_stop() -> None:
        if stop is not None and stop.requested:
            raise SendInterrupted(
                f"stopped by {stop.what}: no new batch was started and the answers to the "
                "requests out were recorded; whoever was not mailed gets the issue when you "
                "resume (the command below)",
                report,
                stop.exit_code,
            )

    with open_store(config) as store, store.send_lock(issue):
        ledger = store.ledger()
        ledger.recover(issue)
        stream = _open_list(list_path, config, options, campaign, store.suppressed_addresses())
        try:
            manifest = _manifest(config, issue_path, list_path, options, campaign)
            version = (manifest.issue_sha256, manifest.templates_sha256)
            _findings(report, ledger, campaign, version, options)
            refuse(report)
            _apply_bounces(ledger, store, report)
            bounced = _bounced(ledger)
            skip_log = _SkipLog(config.build_dir / f"{issue}-skipped.csv")
        except BaseException:
            stream.close()
            raise
        send_id = ledger.start_send(manifest)
        error: BaseException | None = None
        provider: Provider | None = None
        sender: BatchSender | None = None
        pool: ThreadPoolExecutor | None = None
        try:
            schedule = None
            if held and at is not None:
                schedule = _hand_over(
                    config,
                    options.provider,
                    at,
                    report,
                    known_secrets,
                    retries=options.retries,
                    sleep=sleep,
                    stopped=lambda: stop is not None and stop.requested,
                )
                if not sandbox:  # before the first request: a killed send can be cancelled
                    ledger.record_schedule(issue, send_id, options.provider, schedule.batch_id, at)
            provider = open_provider(options.provider, campaign, sandbox=sandbox, schedule=schedule)
            pool = ThreadPoolExecutor(
                max_workers=provider.concurrency, thread_name_prefix="newsletter-send"
            )
            sender = BatchSender(
                provider=provider,
                ledger=None if sandbox else ledger,
                send_id=send_id,
                issue=issue,
                retries=options.retries,
                report=report,
                on_progress=on_progress,
                known_secrets=known_secrets,
                sleep=sleep,
                clock=clock,
                pool=pool,
                check_stop=check_stop,
                stop_deadline=stop_deadline if stop is not None else None,
            )
            total = estimate_rows(list_path)
            limit = rate_limit(config, options.provider)
            if limit is not None:
                sender.limiter = _limiter(limit, ledger, options.provider)
            recipients = _classify(
                stream, report, ledger, campaign, options, skip_log, bounced=bounced
            )
            # Reading the next batch (the generator) overlaps the requests out.
            size = provider.batch_size
            if PROVIDERS[options.provider].spread and total:
                # a short list is spread over every connection rather than queued on a few
                size = max(1, min(size, math.ceil(total / provider.concurrency)))
            if limit is not None:
                size = min(size, limit.count)  # a batch never needs more than the cap holds
            for batch in _chunks(recipients, size):
                check_stop()
                sender.send(batch, total)
            check_stop()
            sender.drain(total)
        except NewsletterError as exc:  # SendStopped too
            report.stopped = redact(str(exc), known_secrets)
            error = exc
        except KeyboardInterrupt as exc:
            report.stopped = "interrupted"
            error = exc
        except BaseException as exc:  # a bug: still close the send row, keep the traceback
            report.stopped = redact(f"{type(exc).__name__}: {exc}", known_secrets)
            error = exc
        cleanup = _Cleanup(error)
        grace = None  # a stop on an error waits for the provider's own timeouts, as before
        if stop is not None and stop.requested:
            # A second Ctrl-C means now: what is still out is recorded unknown at once.
            deadline = stop_deadline() or clock()
            grace = 0.0 if isinstance(error, KeyboardInterrupt) else max(deadline - clock(), 0.0)
        if sender is not None:
            cleanup.run(lambda: sender.abandon_all(grace))
        if pool is not None:
            cleanup.run(lambda: pool.shutdown(wait=not (sender and sender.gave_up)))
        if sender is not None and not sender.gave_up:  # no worker still uses its ledger
            cleanup.run(sender.close)
        cleanup.run(stream.close)
        cleanup.run(lambda: setattr(report, "skipped_file", skip_log.close()))
        if provider is not None:
            cleanup.run(provider.close)
        if cleanup.error is not None and report.stopped is None:
            report.stopped = redact(str(cleanup.error), known_secrets)

        def finish() -> None:
            status = "stopped" if cleanup.error is not None else "finished"
            if report.unknown and status == "finished":
                status = "finished with unknown outcomes"
            report.seconds = time.perf_counter() - started
            counts = {k: v for k, v in report.to_json().items() if isinstance(v, int)}
            ledger.finish_send(send_id, status=status, counts=counts)

        cleanup.run(finish)
        if sender is not None and sender.hard_bounces:
            bounces = sender.hard_bounces
            cleanup.run(lambda: ledger.record_bounces(issue, bounces))
            cleanup.run(lambda: _apply_bounces(ledger, store, report))
        cleanup.run(ledger.checkpoint)
        for later in cleanup.later:
            report.warnings.append(
                "while stopping, also: " + redact(f"{type(later).__name__}: {later}", known_secrets)
            )
        if cleanup.error is not None:
            raise cleanup.error
    if nobody := _nobody_mailed(report, list_path, options):
        raise NothingSent(nobody, report)
    return report


def _hand_over(
    config: Config,
    name: str,
    at: datetime,
    report: Report,
    known_secrets: list[str],
    *,
    retries: Retries,
    sleep: Callable[[float], None],
    stopped: Callable[[], bool],
) -> Scheduled:
    """A new batch id at the provider for a send it holds until `at`.

    A batch id nobody sends with holds nothing, so a request refused for now (a 429, a 5xx,
    the network) or left unanswered is simply made again, with the batches' backoff.
    """
    spec = PROVIDERS[name]
    assert spec.schedule is not None
    account = spec.ready(config)
    attempt = 1
    while True:
        try:
            batch = spec.schedule.new_batch(account, known_secrets)
            break
        except (TransientProviderError, UnknownOutcomeError) as exc:
            if attempt < retries.max_attempts and not stopped():
                sleep(retry_delay(retries, attempt, None))
                attempt += 1
                continue
            error: ProviderError = exc
        except ProviderError as exc:
            error = exc
        tries = f" after {attempt} tries" if attempt > 1 else ""
        raise ProviderError(
            f"{name} made no batch id for the scheduled send{tries} ({error}); nothing was sent",
            status=error.status,
        ) from None
    report.scheduled_batch = batch
    return Scheduled(send_at=int(at.timestamp()), batch_id=batch)


def send_test(config: Config, issue_path: Path, address: str, options: SendOptions) -> Report:
    """One copy to the editor, marked [TEST]: not recorded as a delivery of the issue."""
    from newsletter.lists.addresses import validate_address

    try:
        email = validate_address(address)
    except ValueError as exc:
        raise ConfigError(f"--test-to {address!r} is not a valid address: {exc}") from None
    campaign = prepare(
        config,
        issue_path,
        templates=options.templates,
        allow_local_secret=PROVIDERS[options.provider].local,
        test=True,
    )
    report = Report(campaign.issue.id, campaign.subject, options.provider, f"test:{email}")
    provider = open_provider(options.provider, campaign)
    try:
        result = provider.send([campaign.recipient(email, "")])
        if result.unknown:
            raise UnknownOutcomeError(next(iter(result.unknown.values())))
        if result.error is not None:
            raise result.error
    except ProviderError as exc:
        report.stopped = redact(str(exc), secrets(config))
        raise SendStopped(report.stopped, report) from None
    finally:
        provider.close()
    report.recipients = 1
    report.sent = 1 - len(result.rejected)
    report.rejected = len(result.rejected)
    report.batches = 1
    if PROVIDERS[options.provider].local:
        report.outbox = str(config.outbox_dir)
    return report
