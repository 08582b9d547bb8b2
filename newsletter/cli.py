"""The `newsletter` command: parse options, call one library function, print its result.

Library modules are imported inside each command so that `newsletter render` never pays
for the SendGrid client, and errors of ours become one red line and an exit code here,
in one place.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from newsletter import __version__
from newsletter.errors import ExitCode, NewsletterError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from newsletter.config import Config
    from newsletter.send import Report
    from newsletter.status import IssueStatus

T = TypeVar("T")

app = typer.Typer(
    name="newsletter",
    help="Write each issue as a YAML file, preview it, and send it to every subscriber once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class State:
    config_path: Path | None = None


_state = State()


def escape(text: str) -> str:
    """Text for rich's markup: a `[` typed by an editor or a list is printed, not parsed."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


@contextmanager
def _errors() -> Iterator[None]:
    """The one seam where our exceptions become a red line and an exit code."""
    try:
        yield
    except NewsletterError as exc:
        err = _console(stderr=True)
        for line in str(exc).splitlines() or [type(exc).__name__]:
            err.print(f"[red]error:[/red] {escape(line)}", highlight=False)
        raise typer.Exit(int(exc.exit_code)) from None
    except KeyboardInterrupt:
        _console(stderr=True).print("[yellow]interrupted[/yellow]")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


def _config() -> Config:
    from newsletter.config import load_config

    return load_config(_state.config_path)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"newsletter {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="newsletter.yaml to use (default: the nearest one "
            "at or above the current folder).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Issues as YAML files, rendered once, sent to every subscriber exactly once."""
    _state.config_path = config


IssueArg = Annotated[
    Path, typer.Argument(help="The issue file, e.g. issues/2025-08-01-north-korea.yaml.")
]
TemplatesOpt = Annotated[
    Path | None,
    typer.Option("--templates", help="Folder of templates that override the defaults."),
]


@app.command()
def render(
    issue: IssueArg,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder [default: build/].")
    ] = None,
    templates: TemplatesOpt = None,
) -> None:
    """Render an issue to HTML, plain text and a complete .eml for a sample reader."""
    with _errors():
        from newsletter.preview import render_files

        config = _config()
        result = render_files(issue, config, out or config.build_dir, templates)
        console = _console()
        for path in (result.html, result.text, result.eml):
            console.print(f"wrote {_show(path)}", markup=False)
        console.print(
            f"HTML {result.rendered.html_bytes / 1024:.1f} KB, "
            f"{len(result.issue.all_articles())} articles"
        )
        for warning in result.warnings:
            _console(stderr=True).print(f"[yellow]warning:[/yellow] {escape(warning)}")


@app.command()
def check(
    issues: Annotated[list[Path], typer.Argument(help="Issue files to check.")],
    strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings too.")] = False,
    links: Annotated[
        bool,
        typer.Option(
            "--links",
            help="Also fetch every link (HEAD, else GET; 8 at a time) and report broken ones "
            "and redirects. Needs the network.",
        ),
    ] = False,
    link_timeout: Annotated[
        float, typer.Option("--link-timeout", min=0.1, help="Seconds to wait for each link.")
    ] = 10.0,
    templates: TemplatesOpt = None,
) -> None:
    """Validate issues and lint them before sending: fit to gate a CI job."""
    with _errors():
        from newsletter.check import preflight
        from newsletter.errors import IssueError
        from newsletter.issue import load_issue
        from newsletter.render import render_issue

        config = _config()
        out, err = _console(), _console(stderr=True)
        errors = warnings = 0
        for path in issues:
            try:
                issue = load_issue(path)
                findings = preflight(issue, render_issue(issue, config, templates), config)
            except IssueError as exc:
                for problem in exc.problems:
                    err.print(f"[red]error:[/red] {escape(str(problem))}")
                errors += len(exc.problems)
                continue
            for finding in findings:
                color = "red" if finding.level == "error" else "yellow"
                err.print(f"[{color}]{finding.level}:[/{color}] {escape(str(finding))}")
            errors += sum(f.level == "error" for f in findings)
            warnings += sum(f.level == "warning" for f in findings)
            clean = not findings
            if links:
                from newsletter.links import check_links

                labels = {
                    "error": ("error", "red"),
                    "warning": ("warning", "yellow"),
                    "info": ("redirect", "dim"),
                }
                for result in check_links(issue, timeout=link_timeout):
                    if result.level is None:
                        continue
                    label, color = labels[result.level]
                    for place in result.places:
                        line = escape(f"{place}: {result.url}: {result.message}")
                        err.print(f"[{color}]{label}:[/{color}] {line}")
                    errors += len(result.places) * (result.level == "error")
                    warnings += len(result.places) * (result.level == "warning")
                    clean = clean and result.level == "info"
            if clean:
                out.print(f"[green]ok[/green] {escape(str(path))}")
        out.print(f"{len(issues)} checked: {errors} errors, {warnings} warnings")
        if errors or (strict and warnings):
            raise typer.Exit(int(ExitCode.ERROR))


@app.command()
def preview(
    issue: IssueArg,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open it in the browser.")
    ] = True,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Serve a live preview on 127.0.0.1: desktop, phone and plain text side by "
            "side, re-rendered whenever you save. Ctrl-C stops it.",
        ),
    ] = False,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port for --serve (0: any free port).")
    ] = 8025,
    templates: TemplatesOpt = None,
) -> None:
    """Render an issue and open it in the browser, or serve a live, reloading preview."""
    with _errors():
        from newsletter.preview import render_files

        config = _config()
        if serve:
            from newsletter.serve import serve as serve_preview

            out = _console()
            serve_preview(
                issue,
                config,
                port=port,
                templates=templates,
                open_browser=open_browser,
                ready=lambda url: out.print(
                    f"Previewing {_show(issue)} at {url} (Ctrl-C stops)", markup=False
                ),
            )
            out.print("preview stopped")
            return
        result = render_files(issue, config, config.build_dir, templates)
        _console().print(str(result.html.resolve()), markup=False)
        if open_browser:
            import webbrowser

            webbrowser.open(result.html.resolve().as_uri())


@app.command()
def send(
    issue: IssueArg,
    to: Annotated[
        Path | None, typer.Option("--to", help="The subscriber list (CSV).", show_default=False)
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option("--provider", "-p", help="outbox, smtp or sendgrid [default: from config]."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Send nothing; show who would get what.")
    ] = False,
    test_to: Annotated[
        str | None, typer.Option("--test-to", help="Send one copy, marked [TEST], to ADDRESS.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Only subscribers with this tag (repeatable).")
    ] = None,
    retry_unknown: Annotated[
        bool,
        typer.Option("--retry-unknown", help="Also resend to recipients whose outcome is unknown."),
    ] = False,
    sandbox: Annotated[
        bool,
        typer.Option("--sandbox", help="SendGrid validates every request and delivers nothing."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="List every skipped row.")
    ] = False,
    templates: TemplatesOpt = None,
) -> None:
    """Send an issue to a subscriber list: everyone once, with a dry run and a ledger."""
    with _errors():
        from newsletter.providers import NAMES
        from newsletter.send import SendOptions, SendStopped, send_issue, send_test
        from newsletter.send import dry_run as plan

        config = _config()
        name = provider or config.env.get("NEWSLETTER_PROVIDER") or config.settings.provider
        if name not in NAMES:
            raise UsageError(f"--provider {name!r}: choose one of {', '.join(NAMES)}")
        options = SendOptions(
            provider=name,
            tags=tuple(tag or ()),
            templates=templates,
            retry_unknown=retry_unknown,
            sandbox=sandbox,
        )
        if test_to:
            _print_report(send_test(config, issue, test_to, options), as_json, verbose)
            return
        if to is None:
            raise UsageError("give the subscriber list with --to LIST.csv (or --test-to ADDRESS)")
        if dry_run:
            _print_report(plan(config, issue, to, options), as_json, verbose)
            return
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError("a real send asks for confirmation; without a terminal, add --yes")
            preview = plan(config, issue, to, options, previews=0)
            _print_report(preview, False, False)
            what = "validate" if sandbox else "send"
            if not typer.confirm(
                f"{what.capitalize()} {preview.subject!r} to {preview.to_send} recipients "
                f"via {name}?",
                default=False,
            ):
                raise typer.Exit(int(ExitCode.ERROR))
        try:
            report = _with_progress(
                lambda progress: send_issue(config, issue, to, options, on_progress=progress),
                enabled=not as_json,
            )
        except SendStopped as exc:
            _print_report(exc.report, as_json, verbose)
            raise
        _print_report(report, as_json, verbose)


@app.command()
def status(
    issue: Annotated[
        str,
        typer.Argument(
            help="The issue file or its id, e.g. 2025-08-01-north-korea.", show_default=False
        ),
    ],
    show: Annotated[
        str | None,
        typer.Option(
            "--show",
            help="Print the recipients in one state as CSV: sent, unknown, pending, failed "
            "or rejected.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
) -> None:
    """What the ledger says about an issue: each send, and who got it and who did not."""
    with _errors():
        import csv

        from newsletter import status as ledger_status

        config = _config()
        issue_id = ledger_status.issue_id(issue)
        if show is not None:
            rows = ledger_status.recipients(config, issue_id, show)
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(["email", "status", "updated_at", "provider_id", "error"])
            for d in rows:
                writer.writerow(
                    [d.email, d.status, d.updated_at, d.provider_id or "", d.error or ""]
                )
            return
        found = ledger_status.issue_status(config, issue_id)
        if as_json:
            import json

            typer.echo(json.dumps(found.to_json(), indent=2))
            return
        _print_status(found)


def _print_status(found: IssueStatus) -> None:
    from rich.table import Table

    from newsletter.status import ORDER

    out = _console()
    sends = Table(title=f"Sends of {found.issue}", title_justify="left")
    for column in ("#", "started", "provider", "status", "sent", "unknown", "failed"):
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


@app.command()
def unsubscribe(
    requests: Annotated[
        list[str],
        typer.Argument(
            help="Unsubscribe tokens, links or mail subjects; - reads them from stdin, one a line.",
            show_default=False,
        ),
    ],
) -> None:
    """Put the readers behind unsubscribe requests on the suppression list."""
    with _errors():
        from newsletter.unsubscribe import unsubscribe as suppress

        config = _config()
        given = [
            line for r in requests for line in (sys.stdin.read().splitlines() if r == "-" else [r])
        ]
        result = suppress(config, given, config.suppressions_path)
        console = _console()
        for address in result.addresses:
            console.print(f"  {escape(address)}")
        where = _show(config.suppressions_path)
        console.print(
            f"[green]{result.added} added[/green] to {escape(where)}"
            + (f", {result.already} there already" if result.already else "")
        )
        if result.refused:
            err = _console(stderr=True)
            for text, reason in result.refused:
                err.print(f"[red]error:[/red] {escape(text)}: {escape(reason)}")
            raise typer.Exit(int(ExitCode.ERROR))


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="The folder to set up; made if missing.", show_default=False)
    ],
) -> None:
    """Set up a new workspace: settings, templates, an example issue and a list."""
    with _errors():
        from newsletter.scaffold import init_workspace

        workspace = init_workspace(directory)
        console = _console()
        for path in workspace.created:
            console.print(f"created {_show(path)}", markup=False)
        issue = workspace.issue.relative_to(workspace.root)
        console.print(
            "\nNext:\n"
            f"  cd {_show(workspace.root)}\n"
            "  in newsletter.yaml, put your newsletter's name, from address and postal address\n"
            f"  newsletter check {issue}\n"
            f"  newsletter preview {issue}\n"
            f"  newsletter send {issue} --to subscribers.csv --dry-run\n"
            '  newsletter new "Next week\'s title"\n'
            "Secrets (NEWSLETTER_SECRET for real sends, API keys, passwords) go in the "
            "environment, never in newsletter.yaml: its first lines name them.",
            markup=False,
        )


@app.command()
def new(
    title: Annotated[str, typer.Argument(help="The issue's title.", show_default=False)],
    date: Annotated[
        datetime | None,
        typer.Option(
            "--date",
            formats=["%Y-%m-%d"],
            help="The issue's date, YYYY-MM-DD [default: the next schedule.weekday].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start an issue: issues/<date>-<slug>.yaml with TODOs to fill in; never overwrites."""
    with _errors():
        from newsletter.scaffold import new_issue

        created = new_issue(_config(), title, date=date.date() if date else None)
        _console().print(_show(created.path), markup=False)
        for warning in created.warnings:
            _console(stderr=True).print(f"[yellow]warning:[/yellow] {escape(warning)}")


@app.command()
def archive(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder [default: site/].")
    ] = None,
    drafts: Annotated[
        bool, typer.Option("--drafts", help="Include issues not sent yet and not past their date.")
    ] = False,
    templates: TemplatesOpt = None,
) -> None:
    """Build the web archive: a page per published issue, an index, Atom and RSS feeds."""
    with _errors():
        from newsletter.archive import build_archive

        result = build_archive(_config(), out, drafts=drafts, templates=templates)
        console = _console()
        pages = len(result.published)
        drafts_note = f", {len(result.drafts)} of them drafts" if result.drafts else ""
        console.print(
            f"wrote {_show(result.out)}/: {', '.join(result.site_files)} "
            f"and {pages} issue page{'s' * (pages != 1)}{drafts_note}",
            markup=False,
        )
        if result.left_out:
            console.print(
                f"not published yet: {', '.join(result.left_out)} "
                "(neither sent nor past their date; --drafts shows them)",
                markup=False,
            )
        for warning in result.warnings:
            _console(stderr=True).print(f"[yellow]warning:[/yellow] {escape(warning)}")


def _with_progress(run: Callable[[Callable[[int, int | None], None]], T], enabled: bool) -> T:
    """A rich progress bar (sent/total, rate, ETA) on stderr while `run` sends."""
    if not enabled:
        return run(lambda done, total: None)
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
        TextColumn("sending"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task("send", total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=max(total or 0, done) or None)

        return run(update)


def _print_report(report: Report, as_json: bool, verbose: bool) -> None:
    if as_json:
        import json

        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
        return
    from rich.table import Table
    from rich.text import Text

    out = _console()
    grid = Table(show_header=False, box=None, pad_edge=False)
    grid.add_column(style="bold")
    grid.add_column()

    def row(label: str, value: str) -> None:
        grid.add_row(label, Text(value))  # plain text: subjects and addresses are never markup

    kind = (
        "dry run"
        if report.dry_run
        else ("sandbox (nothing delivered)" if report.sandbox else "send")
    )
    row("Issue", f"{report.issue} ({kind})")
    row("Subject", report.subject)
    where = f" -> {report.outbox}" if report.outbox else ""
    row("Provider", report.provider + where)
    row("List", f"{report.list_path}: {report.rows} rows, {report.recipients} recipients")
    if report.dry_run:
        row("Would send", f"{report.to_send} in {report.batches} batches")
    else:
        row(
            "Sent",
            f"{report.sent} in {report.batches} batches"
            + (f" ({report.retries} retried)" if report.retries else "")
            + (f", {report.sent / report.seconds:,.0f}/s" if report.seconds > 0 else ""),
        )
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
        row("Skipped", f"{sum(report.skipped.values())} rows: {reasons}")
        if report.skipped_file:
            row(
                "",
                f"every skipped row: {_show(Path(report.skipped_file))}"
                + ("" if verbose else " (or --verbose)"),
            )
    for path in report.previews:
        row("Preview", _show(Path(path)))
    out.print(grid)
    if verbose:
        for skipped in report.skipped_rows:
            out.print(
                f"  line {skipped.line}: {skipped.email or '(empty)'}: "
                f"{skipped.reason.value}: {skipped.detail}",
                markup=False,
            )
    err = _console(stderr=True)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if report.outbox and report.sent and not report.dry_run:
        out.print(
            f"[green]Mail landed in {escape(_show(Path(report.outbox)))}/new/[/green] "
            "(a Maildir: open it with any mail client)"
        )


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
