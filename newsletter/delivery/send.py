"""The send: load -> render -> personalise -> send -> record, for one issue and one list.

Every recipient is looked up in the ledger before it is batched, and `batches` records
every batch as `pending` before its request leaves and as `sent`, `failed` or `unknown`
after, so a rerun (or a resume after a crash) mails exactly those who have not had the
issue.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TypeVar

from newsletter import __version__
from newsletter.config import Config, redact, secrets, sendgrid_account, smtp_server
from newsletter.content.render import PACKAGE_TEMPLATES
from newsletter.delivery.batches import BatchSender, Retries
from newsletter.delivery.campaign import Campaign, prepare
from newsletter.delivery.manifest import sha256_file, sha256_tree
from newsletter.delivery.message import Recipient
from newsletter.delivery.output import write_atomic
from newsletter.delivery.providers import Provider, open_provider
from newsletter.delivery.report import Progress, Report, SendStopped
from newsletter.errors import (
    ConfigError,
    NewsletterError,
    ProviderError,
    TemplateError,
)
from newsletter.lists.subscribers import (
    Skipped,
    Subscriber,
    SubscriberStream,
    read_subscribers,
)
from newsletter.lists.tokens import SECRET_ENV
from newsletter.storage.ledger import Ledger, Manifest
from newsletter.storage.store import (
    Suppression,
    existing_ledger,
    open_existing_store,
    open_store,
)

__all__ = [
    "Report",
    "SendOptions",
    "SendStopped",
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


def batch_size(config: Config, provider: str) -> int:
    return config.settings.sendgrid.batch_size if provider == "sendgrid" else 1


class _SkipLog:
    """Every skipped row, streamed to a CSV beside the build output, so none goes unseen."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._fh = self._tmp.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._fh)
        self._writer.writerow(["line", "email", "reason", "detail"])
        self.count = 0

    def write(self, row: Skipped) -> None:
        self._writer.writerow([row.line, row.email, row.reason.value, row.detail])
        self.count += 1

    def close(self) -> str | None:
        self._fh.close()
        if not self.count:
            self._tmp.unlink(missing_ok=True)
            self.path.unlink(missing_ok=True)
            return None
        self._tmp.replace(self.path)
        return str(self.path)


def _readiness(config: Config, provider: str) -> list[str]:
    """What a real send would trip over, said before it is tried."""
    problems = []
    if provider != "outbox" and not config.env.get(SECRET_ENV):
        problems.append(
            f"{SECRET_ENV} is not set: a real {provider} send would stop; "
            "set it to a long random value"
        )
    try:
        if provider == "sendgrid":
            sendgrid_account(config)
        elif provider == "smtp":
            smtp_server(config)
    except ConfigError as exc:
        problems.append(str(exc))
    return problems


def _version(config: Config, issue_path: Path, options: SendOptions) -> tuple[str, str]:
    """What readers get, by content: SHA-256 of the issue file and of the templates."""
    templates = options.templates or config.templates_dir or PACKAGE_TEMPLATES
    return sha256_file(issue_path), sha256_tree(templates)


def _manifest(
    config: Config, issue_path: Path, list_path: Path, options: SendOptions, campaign: Campaign
) -> Manifest:
    issue_sha256, templates_sha256 = _version(config, issue_path, options)
    return Manifest(
        issue=campaign.issue.id,
        issue_path=str(issue_path),
        issue_sha256=issue_sha256,
        templates_sha256=templates_sha256,
        list_path=str(list_path),
        list_sha256=sha256_file(list_path),
        provider=options.provider,
        tool_version=__version__,
        dry_run=options.sandbox and options.provider == "sendgrid",
    )


def _changed_since(ledger: Ledger, issue: str, version: tuple[str, str]) -> list[str]:
    """Earlier sends of the issue that mailed people another version of it: said, not refused,
    since fixing a typo before resuming a stopped send is what an editor would do."""
    issue_sha256, templates_sha256 = version
    changed: dict[int, tuple[str, str]] = {}
    for record in ledger.sends(issue):
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
        f"{what} changed since send {send_id} ({when} UTC), which mailed {mailed[send_id]} "
        "recipients: they have the earlier version, anyone mailed now gets this one"
        for send_id, (what, when) in changed.items()
        if mailed.get(send_id)
    ]


def _classify(
    stream: Iterable[Subscriber | Skipped],
    report: Report,
    ledger: Ledger | None,
    campaign: Campaign,
    options: SendOptions,
    skip_log: _SkipLog,
    on_rows: Callable[[int], None] | None = None,
) -> Iterator[Recipient]:
    """Subscribers who still need this issue, as recipients; everything else is counted."""
    issue = campaign.issue.id
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
        known = (
            ledger.statuses(issue, [s.key for s in subscribers]) if ledger and subscribers else {}
        )
        for sub in subscribers:
            state = known.get(sub.key)
            if state == "sent":
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


def dry_run(
    config: Config,
    issue_path: Path,
    list_path: Path,
    options: SendOptions,
    *,
    previews: int = 3,
    out: Path | None = None,
    on_progress: Progress | None = None,
) -> Report:
    """Everything a send would do except sending: who, how many, and real previews.

    Opens no network connection and writes nothing but files under `build/`. `on_progress`
    hears (rows read, rows in the file) as the list is checked: a million rows take seconds.
    """
    started = time.perf_counter()
    campaign = prepare(config, issue_path, templates=options.templates, allow_local_secret=True)
    report = Report(
        campaign.issue.id, campaign.subject, options.provider, str(list_path), dry_run=True
    )
    report.warnings = _readiness(config, options.provider)
    out = out or config.build_dir / "preview" / campaign.issue.id
    ledger = existing_ledger(config)
    if ledger:
        version = _version(config, issue_path, options)
        report.warnings += _changed_since(ledger, campaign.issue.id, version)
    skip_log = _SkipLog(config.build_dir / f"{campaign.issue.id}-skipped.csv")
    # Read only: a dry run creates no store, and one that exists may hold suppressions.
    store = open_existing_store(config)
    try:
        suppressed = list(store.suppressed_addresses()) if store else []
    finally:
        if store:
            store.close()
    try:
        with _open_list(list_path, config, options, campaign, suppressed) as stream:
            shown: list[Recipient] = []
            total = estimate_rows(list_path) if on_progress else None
            on_rows = (lambda rows: on_progress(rows, total)) if on_progress else None
            recipients = _classify(stream, report, ledger, campaign, options, skip_log, on_rows)
            for recipient in recipients:
                if len(shown) < previews:
                    shown.append(recipient)
    finally:
        report.skipped_file = skip_log.close()
        if ledger:
            ledger.close()
    for n, recipient in enumerate(shown, start=1):
        name = f"{n:02d}-{recipient.email.replace('/', '_')}.eml"
        report.previews.append(str(write_atomic(out / name, campaign.builder.build(recipient))))
    if shown:
        html, text = campaign.rendered.personalise(shown[0].fields)
        report.previews.append(str(write_atomic(out / "index.html", html)))
        report.previews.append(str(write_atomic(out / "index.txt", text)))
    report.batches = math.ceil(report.to_send / batch_size(config, options.provider))
    report.seconds = time.perf_counter() - started
    return report


def send_issue(
    config: Config,
    issue_path: Path,
    list_path: Path,
    options: SendOptions,
    *,
    on_progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Report:
    """Send the issue to everyone on the list who has not had it; record each outcome."""
    started = time.perf_counter()
    sandbox = options.sandbox and options.provider == "sendgrid"
    if options.sandbox and not sandbox:
        raise ConfigError(
            "--sandbox is SendGrid's validation mode; use it with --provider sendgrid"
        )
    campaign = prepare(
        config,
        issue_path,
        templates=options.templates,
        allow_local_secret=options.provider == "outbox",
    )
    issue = campaign.issue.id
    report = Report(issue, campaign.subject, options.provider, str(list_path), sandbox=sandbox)
    if options.provider == "outbox":
        report.outbox = str(config.outbox_dir)
    known_secrets = secrets(config)
    with open_store(config) as store, store.send_lock(issue):
        ledger = store.ledger()
        ledger.recover(issue)
        stream = _open_list(list_path, config, options, campaign, store.suppressed_addresses())
        skip_log = _SkipLog(config.build_dir / f"{issue}-skipped.csv")
        manifest = _manifest(config, issue_path, list_path, options, campaign)
        report.warnings += _changed_since(
            ledger, issue, (manifest.issue_sha256, manifest.templates_sha256)
        )
        send_id = ledger.start_send(manifest)
        status = "failed"
        provider: Provider | None = None
        sender: BatchSender | None = None
        pool: ThreadPoolExecutor | None = None
        try:
            provider = open_provider(options.provider, campaign, sandbox=sandbox)
            pool = ThreadPoolExecutor(
                max_workers=provider.concurrency, thread_name_prefix="newsletter-send"
            )
            sender = BatchSender(
                provider,
                None if sandbox else ledger,
                send_id,
                issue,
                options.retries,
                report,
                on_progress,
                known_secrets,
                sleep,
                clock,
                pool,
            )
            total = estimate_rows(list_path)
            recipients = _classify(stream, report, ledger, campaign, options, skip_log)
            # Reading the next batch (the generator) overlaps the requests out.
            for batch in _chunks(recipients, provider.batch_size):
                sender.send(batch, total)
            sender.drain(total)
            status = "finished"
        except SendStopped as exc:
            report.stopped = redact(str(exc), known_secrets)
            raise
        except NewsletterError as exc:
            report.stopped = redact(str(exc), known_secrets)
            raise
        except KeyboardInterrupt:
            status = "interrupted"
            report.stopped = "interrupted"
            raise
        finally:
            try:
                if sender is not None:
                    sender.abandon_all()
            finally:
                if pool is not None:
                    pool.shutdown(wait=True)
            stream.close()
            report.skipped_file = skip_log.close()
            if provider is not None:
                provider.close()
            if report.unknown and status == "finished":
                status = "finished with unknown outcomes"
            report.seconds = time.perf_counter() - started
            counts = {k: v for k, v in report.to_json().items() if isinstance(v, int)}
            ledger.finish_send(send_id, status=status, counts=counts)
            if sender is not None and sender.hard_bounces:
                store.suppress(
                    Suppression(email, reason, "bounce", "send", issue)
                    for email, reason in sender.hard_bounces
                )
    return report


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
        allow_local_secret=options.provider == "outbox",
        test=True,
    )
    report = Report(campaign.issue.id, campaign.subject, options.provider, f"test:{email}")
    provider = open_provider(options.provider, campaign)
    try:
        result = provider.send([campaign.recipient(email, "")])
    except ProviderError as exc:
        report.stopped = redact(str(exc), secrets(config))
        raise SendStopped(report.stopped, report) from None
    finally:
        provider.close()
    report.recipients = 1
    report.sent = 1 - len(result.rejected)
    report.rejected = len(result.rejected)
    report.batches = 1
    if options.provider == "outbox":
        report.outbox = str(config.outbox_dir)
    return report
