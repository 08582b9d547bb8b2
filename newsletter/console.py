"""How results look in a terminal: reports, tables and the progress bar of `newsletter`.

Only the CLI prints through this; the library returns reports and raises errors, and
never prints or imports this module (counted nouns come from `newsletter.words`).
Rich is imported inside each function, so a command that prints little pays little.

Over 400 lines: one short printer per command's result (the send report, status and what
is still to go out, cancel, the progress bar), sharing `console()`, `escape` and the way
times and counts are shown; split by command, what a terminal shows would be scattered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import typer

from newsletter.words import plural

if TYPE_CHECKING:
    from datetime import tzinfo

    from rich.console import Console

    from newsletter.delivery.reputation import IssueFeedback
    from newsletter.delivery.schedule import CancelReport
    from newsletter.delivery.send import Report
    from newsletter.delivery.status import IssueStatus, Upcoming
    from newsletter.errors import NewsletterError
    from newsletter.storage.waiting import WaitingSend

T = TypeVar("T")


#: What a terminal would obey rather than show: C0 and C1 controls (ESC starts the
#: sequences that recolour, retitle or clear it), DEL, and the bidi controls that make
#: text read differently from how it is stored. Line breaks too: one cell, one line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """Text from a list, a token or a server, safe to print: each control character is
    shown as its escape (`\\x1b`), never sent to the terminal."""
    if text.isprintable():
        return text
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)


def escape(text: str) -> str:
    """Text for rich's markup: a `[` typed by an editor or a list is printed, not parsed,
    and a control character is shown, not obeyed (`printable`)."""
    from rich.markup import escape as rich_escape

    return rich_escape(printable(text))


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def print_status(found: IssueStatus) -> None:
    from rich.table import Table

    from newsletter.delivery.status import ORDER

    out = console()
    print_waiting(found)
    if not found.sends:  # only waiting: the ledger has not seen it yet
        return
    sends = Table(title=f"Sends of {found.issue}", title_justify="left")
    for column in ("#", "started (UTC)", "provider", "status", "sent", "unknown", "failed"):
        sends.add_column(
            column, justify="right" if column in ("#", "sent", "unknown", "failed") else "left"
        )
    for record in found.sends:
        counts = record.counts
        sends.add_row(
            str(record.id),
            record.started_at[:19].replace("T", " "),
            record.provider + (" (sandbox)" if record.manifest.dry_run else ""),
            record.status,
            *(str(counts.get(k, "")) for k in ("sent", "unknown", "failed")),
        )
    out.print(sends)
    states = ", ".join(f"{found.recipients[s]} {s}" for s in ORDER if found.recipients[s])
    out.print(f"Recipients: {states or 'none'}", markup=False)
    rehearsed = ", ".join(f"{found.rehearsal[s]} {s}" for s in ORDER if found.rehearsal[s])
    if rehearsed:
        out.print(
            f"Outbox rehearsals (not deliveries: no reader got these): {rehearsed}",
            markup=False,
        )
    for state, advice in (
        ("unknown", "may or may not have it; resend only with send --retry-unknown"),
        ("pending", "a send is running, or was killed: the next send marks them unknown"),
        ("failed", "did not get it; the next send of the issue tries them again"),
        ("rejected", "refused by the server for good"),
    ):
        if found.recipients[state]:
            out.print(
                f"  {found.recipients[state]} {state}: {advice} (list: --show {state})",
                markup=False,
            )
    if found.after_send is not None:
        print_after_send(found.after_send)
    print_schedules(found)


def print_waiting(found: IssueStatus) -> None:
    """The issue's sends waiting in the foreground for their time: one line each."""
    for send in found.waiting:
        console().print(f"Waiting: {_waiting_line(send, found.timezone)}", markup=False)


def _waiting_line(send: WaitingSend, timezone: tzinfo | None) -> str:
    import time
    from datetime import datetime

    from newsletter.delivery.ratelimit import describe
    from newsletter.delivery.schedule import show

    at = datetime.fromisoformat(send.send_at).astimezone(timezone)
    left = describe(max(at.timestamp() - time.time(), 0))
    return (
        f"a send via {send.provider} at {show(at)} (in {left}), pid {send.pid} on "
        f"{send.host}, waiting in the foreground; `newsletter cancel {send.issue}` stops it"
    )


def print_upcoming(found: Upcoming) -> None:
    """`newsletter status` without an issue: every send still to go out, one line each."""
    from datetime import datetime

    from newsletter.delivery.schedule import show

    out = console()
    for send in found.waiting:
        out.print(f"Waiting: {send.issue}: {_waiting_line(send, found.timezone)}", markup=False)
    for held in found.scheduled:
        at = show(datetime.fromisoformat(held.send_at).astimezone(found.timezone))
        out.print(
            f"Scheduled: {held.issue}: send {held.send_id} via {held.provider} (batch "
            f"{held.provider_batch}): {plural(held.recipients, 'recipient')} at {at}",
            markup=False,
        )
    if not found.waiting and not found.scheduled:
        out.print("Nothing waits or is scheduled to go out.", markup=False)


def print_cancel(done: CancelReport) -> None:
    """What `newsletter cancel` did, and what mails those readers now."""
    from datetime import datetime

    from newsletter.delivery.schedule import show

    out = console()
    for send in done.stopped:
        out.print(
            f"Stopped the send via {send.provider} waiting for "
            f"{show(datetime.fromisoformat(send.send_at).astimezone(done.timezone))} "
            f"(pid {send.pid}): nothing was sent",
            markup=False,
        )
    for batch, at, marked in done.cancelled:
        out.print(
            f"Cancelled the send of {show(datetime.fromisoformat(at))} (batch {batch}): "
            f"{plural(marked, 'recipient')} marked not sent",
            markup=False,
        )
    for batch, at, when in done.already:
        out.print(
            f"Already cancelled: the send of {show(datetime.fromisoformat(at))} (batch {batch}), "
            f"at {when[:16].replace('T', ' ')} UTC",
            markup=False,
        )
    if done.marked:
        out.print(
            f"The next send of {done.issue} mails them (with --at, at a new time).", markup=False
        )
    err = console(stderr=True)
    for refusal in done.refused:
        err.print(f"[yellow]not cancelled:[/yellow] {escape(refusal)}")


def print_schedules(found: IssueStatus) -> None:
    """The issue's sends held by the provider for a set time, cancelled or not: one line
    each (a SendGrid batch id is too long for a table in 80 columns)."""
    from datetime import datetime

    from newsletter.delivery.schedule import show

    out = console()
    for held in found.schedules:
        at = show(datetime.fromisoformat(held.send_at).astimezone(found.timezone))
        what = f"send {held.send_id} via {held.provider} (batch {held.provider_batch})"
        if held.cancelled_at:
            when = held.cancelled_at[:16].replace("T", " ")
            line = (
                f"{what}, for {at}: cancelled at {when} UTC, "
                f"{plural(held.recipients, 'recipient')} marked not sent"
            )
        else:
            line = f"{what}: {plural(held.recipients, 'recipient')} at {at}, scheduled"
        out.print(f"Scheduled: {line}", markup=False)


def print_after_send(found: IssueFeedback) -> None:
    """Bounces, complaints and unsubscribes of an issue, with rates and warnings."""
    parts = [
        (found.hard, "bounced (hard)"),
        (found.soft, "bounced (soft)"),
        (found.complained, "complained"),
        (found.unsubscribed, "unsubscribed"),
    ]
    # no rate of nothing sent (the issue only rehearsed in the outbox, say)
    said = ", ".join(
        f"{n} {what}" + (f" ({found.rate(n):.2%})" if found.sent else "") for n, what in parts
    )
    console().print(f"After the send, of {found.sent} sent: {said}", markup=False)
    for warning in found.warnings:
        console(stderr=True).print(f"[yellow]warning:[/yellow] {escape(warning)}")


class ProgressBar(Protocol):
    """What `with_progress` hands its work: called with (done, total) as it goes, and
    `wait(seconds)` while a send waits for its time (`send --at`)."""

    def __call__(self, done: int, total: int | None) -> None: ...

    def wait(self, left: float) -> None: ...


class _NoBar:
    def __call__(self, done: int, total: int | None) -> None:
        pass

    def wait(self, left: float) -> None:
        pass


def countdown(seconds: float) -> str:
    """Seconds left as a clock: `2 days 03:04:05`, `00:00:42`."""
    days, rest = divmod(max(round(seconds), 0), 86400)
    hours, rest = divmod(rest, 3600)
    clock = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{plural(days, 'day')} {clock}" if days else clock


def with_progress(
    run: Callable[[ProgressBar], T],
    enabled: bool,
    label: str = "sending",
    waiting: str = "to wait",
) -> T:
    """A rich progress bar (done/total, rate, ETA) on stderr while `run` works; while it
    waits for a set time, a countdown in its place, `waiting` said after it."""
    if not enabled:
        return run(_NoBar())
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    class Rate(TextColumn):
        def __init__(self) -> None:
            super().__init__("")

        def render(self, task: Any) -> Any:
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f}/s" if speed else "")

    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        class Bar:
            waited = False

            def __call__(self, done: int, total: int | None) -> None:
                if self.waited:
                    self.waited = False
                    bar.update(task, description=label)
                bar.update(task, completed=done, total=max(total or 0, done) or None)

            def wait(self, left: float) -> None:
                """Seconds left; 0 when the time has come."""
                self.waited = left > 0
                text = f"{countdown(left)} {waiting} (Ctrl-C: nothing is sent)"
                bar.update(task, description=text if self.waited else label)

        return run(Bar())


def print_error_json(exc: NewsletterError) -> None:
    """One JSON object on stdout for an error under --json: the report too, if a send had one."""
    import json

    data: dict[str, Any] = {}
    report = getattr(exc, "report", None)
    if report is not None:
        data.update(report.to_json())
    data["error"] = {
        "type": type(exc).__name__,
        "message": str(exc),
        "exit_code": int(exc.exit_code),
    }
    typer.echo(json.dumps(data, indent=2, default=str))


def print_report(report: Report, as_json: bool, verbose: bool) -> None:
    if as_json:
        import json
        import os

        from newsletter.config import env_secrets, redact

        text = json.dumps(report.to_json(), indent=2, default=str)
        typer.echo(redact(text, env_secrets(os.environ)))
        return
    from rich.table import Table
    from rich.text import Text

    out = console()
    grid = Table(show_header=False, box=None, pad_edge=False)
    grid.add_column(style="bold")
    grid.add_column()

    def row(label: str, value: str) -> None:
        grid.add_row(label, Text(printable(value)))  # subjects and addresses are never markup

    kind = (
        "dry run"
        if report.dry_run
        else ("sandbox (nothing delivered)" if report.sandbox else "send")
    )
    row("Issue", f"{report.issue} ({kind})")
    row("Subject", report.subject)
    where = f" -> {report.outbox}" if report.outbox else ""
    row("Provider", report.provider + where)
    rows, recipients = plural(report.rows, "row"), plural(report.recipients, "recipient")
    row("List", f"{report.list_path}: {rows}, {recipients}")
    if report.dry_run:
        row("Would send", f"{report.to_send} in {plural(report.batches, 'batch', 'batches')}")
        if report.rate_limit and report.rate_seconds is not None:
            from newsletter.delivery.ratelimit import describe

            row("Rate limit", f"{report.rate_limit}: at best {describe(report.rate_seconds)}")
            if report.rate_seconds >= 86400:
                row(
                    "",
                    "more than the cap allows at once: the send stops at the cap and says "
                    "when to run it again",
                )
    else:
        row(
            "Handed over" if report.scheduled_batch else "Sent",
            f"{report.sent} in {plural(report.batches, 'batch', 'batches')}"
            + (f" ({report.retries} retried)" if report.retries else "")
            + (f", {report.sent / report.seconds:,.0f}/s" if report.seconds > 0 else ""),
        )
    if report.send_at_note:
        batch = f" (batch {report.scheduled_batch})" if report.scheduled_batch else ""
        row("Goes out", report.send_at_note + batch)
    extra = {
        "already sent": report.already_sent,
        "outcome unknown before (use --retry-unknown)": report.unknown_before,
        "refused before": report.rejected_before,
        "outcome unknown now": report.unknown,
        "failed (not sent)": report.failed,
        "refused by the server": report.rejected,
    }
    for label, count in extra.items():
        if count:
            row("", f"{count} {label}")
    if report.skipped:
        reasons = ", ".join(f"{n} {reason}" for reason, n in report.skipped.most_common())
        row("Skipped", f"{plural(sum(report.skipped.values()), 'row')}: {reasons}")
        if report.skipped_file:
            row(
                "",
                f"every skipped row: {show_path(Path(report.skipped_file))}"
                + ("" if verbose else " (or --verbose)"),
            )
    for path in report.previews:
        row("Preview", show_path(Path(path)))
    out.print(grid)
    if verbose:
        for skipped in report.skipped_rows:
            out.print(
                printable(
                    f"  line {skipped.line}: {skipped.email or '(empty)'}: "
                    f"{skipped.reason.value}: {skipped.detail}"
                ),
                markup=False,
            )
    err = console(stderr=True)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    for refusal in report.refused:
        err.print(f"[red]a send would refuse:[/red] {escape(refusal)}")
    if report.outbox and report.sent and not report.dry_run:
        out.print(
            f"[green]Mail landed in {escape(show_path(Path(report.outbox)))}/new/[/green] "
            "(a Maildir: open it with any mail client)"
        )


def show_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
