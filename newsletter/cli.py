"""The `newsletter` command: parse options, call one library function, print its result.

Library modules are imported inside each command so that `newsletter render` never pays
for the SendGrid client, and errors of ours become one red line and an exit code here,
in one place.

Over 400 lines on purpose: one short function per command, all of them typer
declarations and calls, with the one error seam (`_errors`) they share; split by
command, the seam and the shared options would have to be imported back into each.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from newsletter import __version__
from newsletter.cli_help import PlainTyper
from newsletter.console import (
    console,
    escape,
    print_cancel,
    print_error_json,
    print_report,
    print_status,
    print_upcoming,
    printable,
    show_path,
    with_progress,
)
from newsletter.errors import ExitCode, NewsletterError, UsageError
from newsletter.words import plural

if TYPE_CHECKING:
    from newsletter.config import Config
    from newsletter.delivery.send import SendOptions

T = TypeVar("T")

app = PlainTyper(
    name="newsletter",
    help="Write each issue as a YAML file, preview it, and send it to every subscriber once.",
    no_args_is_help=True,
    add_completion=True,
    # Click's plain help: typer's rich help reads "[default: ...]" in a help text as markup
    # and drops it, and labels every flag <bool>.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


@dataclass(frozen=True)
class Options:
    """The options given before the command, handed to it as typer's context object
    (`ctx.obj`) rather than kept in a module-level global."""

    config_path: Path | None = None


@contextmanager
def _errors(as_json: bool = False) -> Iterator[None]:
    """The one seam where our exceptions become a red line and an exit code.

    With `--json`, stdout also gets one JSON object for the error (with the report of a
    send that stopped), so a script reading stdout is never left with nothing.
    """
    try:
        yield
    except NewsletterError as exc:
        err = console(stderr=True)
        from newsletter.config import env_secrets, redact

        # the library scrubs what it knows; this catches a secret in any other message
        message = redact(str(exc), env_secrets(os.environ))
        for line in message.splitlines() or [type(exc).__name__]:
            err.print(f"[red]error:[/red] {escape(line)}", highlight=False)
        if as_json:
            print_error_json(exc)
        raise typer.Exit(int(exc.exit_code)) from None
    except KeyboardInterrupt:
        console(stderr=True).print("[yellow]interrupted[/yellow]")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


def _config(ctx: typer.Context) -> Config:
    from newsletter.config import load_config

    options = ctx.obj if isinstance(ctx.obj, Options) else Options()
    return load_config(options.config_path)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"newsletter {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            metavar="FILE",
            help="newsletter.yaml to use [default: the nearest one at or above the current "
            "folder].",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Issues as YAML files, rendered once, sent to every subscriber exactly once."""
    ctx.obj = Options(config_path=config)


IssueArg = Annotated[
    Path,
    typer.Argument(
        metavar="ISSUE", help="The issue file, e.g. issues/2025-08-01-north-korea.yaml."
    ),
]
#: An issue named by its file or by its id: commands that read the ledger need no file.
IssueRefArg = Annotated[
    str,
    typer.Argument(
        metavar="ISSUE",
        help="The issue file or its id, e.g. 2025-08-01-north-korea.",
        show_default=False,
    ),
]
TemplatesOpt = Annotated[
    Path | None,
    typer.Option(
        "--templates", metavar="DIR", help="Folder of templates that override the defaults."
    ),
]


@app.command()
def init(
    directory: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", help="The folder to set up; made if missing.", show_default=False
        ),
    ],
) -> None:
    """Set up a new workspace: settings, templates, an example issue and a list."""
    with _errors():
        from newsletter.scaffold import init_workspace

        workspace = init_workspace(directory)
        out = console()
        for path in workspace.created:
            out.print(f"created {show_path(path)}", markup=False)
        issue = workspace.issue.relative_to(workspace.root)
        out.print(
            "\nNext:\n"
            f"  cd {show_path(workspace.root)}\n"
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
    ctx: typer.Context,
    title: Annotated[
        str, typer.Argument(metavar="TITLE", help="The issue's title.", show_default=False)
    ],
    date: Annotated[
        datetime | None,
        typer.Option(
            "--date",
            formats=["%Y-%m-%d"],
            metavar="DATE",
            help="The issue's date [default: the next schedule.weekday].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start an issue: issues/<date>-<slug>.yaml with TODOs to fill in; never overwrites."""
    with _errors():
        from newsletter.scaffold import new_issue

        created = new_issue(_config(ctx), title, date=date.date() if date else None)
        console().print(show_path(created.path), markup=False)
        for warning in created.warnings:
            console(stderr=True).print(f"[yellow]warning:[/yellow] {escape(warning)}")


@app.command()
def add(
    ctx: typer.Context,
    urls: Annotated[
        list[str] | None, typer.Argument(metavar="URL", help="Links to add.", show_default=False)
    ] = None,
    issue: Annotated[
        Path | None,
        typer.Option(
            "--issue",
            metavar="FILE",
            help="The issue file [default: the next unsent one, or a new one].",
            show_default=False,
        ),
    ] = None,
    section: Annotated[
        str | None,
        typer.Option(
            "--section",
            metavar="TITLE",
            help="Add to the section with this title (made if missing).",
        ),
    ] = None,
    from_feed: Annotated[
        list[str] | None,
        typer.Option(
            "--from-feed",
            metavar="URL",
            help="An RSS or Atom feed: add its new entries (repeatable).",
        ),
    ] = None,
    from_feeds: Annotated[
        bool, typer.Option("--from-feeds", help="Add the new entries of every feed in sources:.")
    ] = False,
    since: Annotated[
        datetime | None,
        typer.Option(
            "--since",
            formats=["%Y-%m-%d"],
            metavar="DATE",
            help="Feed entries from this day on, YYYY-MM-DD [default: the last sent issue's date].",
            show_default=False,
        ),
    ] = None,
    again: Annotated[
        bool, typer.Option("--again", help="Add links featured in another issue all the same.")
    ] = False,
    allow_local: Annotated[
        bool,
        typer.Option(
            "--allow-local", help="Also fetch private, loopback and link-local addresses."
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", min=0.1, metavar="SECONDS", help="Seconds to wait for each page."
        ),
    ] = 15.0,
) -> None:
    """Fetch links and add each as an article (headline, teaser, image, source) to an issue."""
    with _errors():
        from newsletter.content.collect.add import AddOptions, add_from_feeds, add_links

        config = _config(ctx)
        options = AddOptions(
            issue=issue, section=section, again=again, allow_local=allow_local, timeout=timeout
        )
        feeds = [*(from_feed or ()), *(config.settings.sources if from_feeds else ())]
        if since is not None and not (from_feed or from_feeds):
            raise UsageError("--since goes with --from-feed FEED_URL or --from-feeds")
        if feeds or from_feeds:
            if urls:
                raise UsageError("give links or feeds, not both")
            report = add_from_feeds(config, feeds, options, since.date() if since else None)
        else:
            report = add_links(config, urls or [], options)
        out, err = console(), console(stderr=True)
        if report.since is not None:
            out.print(f"feed entries since {report.since}", markup=False)
        if report.created and report.issue is not None:
            out.print(f"started {show_path(report.issue)}", markup=False)
        for result in report.results:
            if result.outcome == "failed":
                err.print(f"[red]error:[/red] {escape(result.url)}: {escape(result.message)}")
            elif result.outcome == "skipped":
                err.print(
                    f"[yellow]skipped:[/yellow] {escape(result.url)}: {escape(result.message)}"
                )
            else:
                out.print(f"[green]added[/green] {escape(result.message)}")
                for note in result.notes:
                    out.print(f"  {escape(note)}", highlight=False)
        where = f" to {escape(str(show_path(report.issue)))}" if report.issue else ""
        out.print(
            f"{report.count('added')} added{where}, "
            f"{report.count('skipped')} skipped, {report.count('failed')} failed"
        )
        if report.count("failed"):
            raise typer.Exit(int(ExitCode.ERROR))


@app.command()
def check(
    ctx: typer.Context,
    issues: Annotated[list[Path], typer.Argument(metavar="ISSUE", help="Issue files to check.")],
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
        float,
        typer.Option(
            "--link-timeout", min=0.1, metavar="SECONDS", help="Seconds to wait for each link."
        ),
    ] = 10.0,
    templates: TemplatesOpt = None,
) -> None:
    """Validate issues and lint them before sending: fit to gate a CI job."""
    with _errors():
        from newsletter.content.check import preflight
        from newsletter.content.issue import load_issue
        from newsletter.content.render import render_issue
        from newsletter.errors import IssueError

        config = _config(ctx)
        out, err = console(), console(stderr=True)
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
                from newsletter.content.links import LINKS_FILE, check_links

                labels = {
                    "error": ("error", "red"),
                    "warning": ("warning", "yellow"),
                    "info": ("redirect", "dim"),
                }
                record = config.state_dir / LINKS_FILE
                for result in check_links(issue, timeout=link_timeout, record=record):
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
        out.print(
            f"{len(issues)} checked: {plural(errors, 'error')}, {plural(warnings, 'warning')}"
        )
        if errors or (strict and warnings):
            raise typer.Exit(int(ExitCode.ERROR))


@app.command()
def links(ctx: typer.Context, issue: IssueArg) -> None:
    """List the issue's links with what the last `check --links` found for each."""
    with _errors():
        from newsletter.content.issue import load_issue
        from newsletter.content.links import LINKS_FILE, recorded

        config = _config(ctx)
        found = recorded(load_issue(issue), config.state_dir / LINKS_FILE)
        out = console()
        colors = {"ok": "green", "redirected": "dim", "broken": "red", "unknown": "yellow"}
        for url, places, last in found:
            if last is None:
                state = "[dim]not checked[/dim]"
            else:
                color = colors[last.outcome]
                state = (
                    f"[{color}]{last.outcome}[/{color}] {escape(last.message)} ({last.checked_at})"
                )
            out.print(f"{escape(url)}  {state}", highlight=False)
            for place in places:
                out.print(f"  {escape(str(place))}", highlight=False)
        broken = sum(last is not None and last.outcome == "broken" for _, _, last in found)
        unchecked = sum(last is None for _, _, last in found)
        out.print(
            f"{len(found)} links: {broken} broken, {unchecked} not checked"
            + ("; run `newsletter check --links` to check them" if unchecked else "")
        )


@app.command()
def render(
    ctx: typer.Context,
    issue: IssueArg,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="Output folder [default: build/].",
            show_default=False,
        ),
    ] = None,
    templates: TemplatesOpt = None,
) -> None:
    """Render an issue to HTML, plain text and a complete .eml for a sample reader."""
    with _errors():
        from newsletter.web.preview_files import render_files

        config = _config(ctx)
        result = render_files(issue, config, out or config.build_dir, templates)
        say = console()
        for path in (result.html, result.text, result.eml):
            say.print(f"wrote {show_path(path)}", markup=False)
        say.print(
            f"HTML {result.rendered.html_bytes / 1024:.1f} KB, "
            f"{plural(len(result.issue.all_articles()), 'article')}"
        )
        for warning in result.warnings:
            console(stderr=True).print(f"[yellow]warning:[/yellow] {escape(warning)}")


@app.command()
def preview(
    ctx: typer.Context,
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
        int,
        typer.Option(
            "--port", min=0, max=65535, metavar="PORT", help="Port for --serve (0: any free port)."
        ),
    ] = 8025,
    templates: TemplatesOpt = None,
) -> None:
    """Render an issue and open it in the browser, or serve a live, reloading preview."""
    with _errors():
        from newsletter.web.preview_files import render_files

        config = _config(ctx)
        if serve:
            from newsletter.web.preview_server import serve as serve_preview

            out = console()
            serve_preview(
                issue,
                config,
                port=port,
                templates=templates,
                open_browser=open_browser,
                ready=lambda url: out.print(
                    f"Previewing {show_path(issue)} at {url} (Ctrl-C stops)", markup=False
                ),
            )
            out.print("preview stopped")
            return
        result = render_files(issue, config, config.build_dir, templates)
        console().print(str(result.html.resolve()), markup=False)
        if open_browser:
            import webbrowser

            webbrowser.open(result.html.resolve().as_uri())


@app.command()
def send(
    ctx: typer.Context,
    issue: IssueArg,
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            metavar="FILE",
            help="The subscriber list (CSV); without it, the audience.",
            show_default=False,
        ),
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider",
            "-p",
            metavar="NAME",
            help="outbox, smtp or sendgrid [default: provider in newsletter.yaml].",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Send nothing; show who would get what.")
    ] = False,
    test_to: Annotated[
        str | None,
        typer.Option(
            "--test-to", metavar="ADDRESS", help="Send one copy, marked [TEST], to ADDRESS."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="Only subscribers with this tag (repeatable)."),
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
    force: Annotated[
        bool,
        typer.Option("--force", help="Send although `newsletter check` finds errors in the issue."),
    ] = False,
    as_new_issue: Annotated[
        bool,
        typer.Option(
            "--as-new-issue",
            help="Send although the same issue (same file content, or same date and title) "
            "was already sent under another id, e.g. before the file was renamed.",
        ),
    ] = False,
    templates: TemplatesOpt = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="TIME",
            help='Send at this time, e.g. "2026-12-04 08:00" (in timezone: from newsletter.yaml, '
            "else this machine's) or 2026-12-04T08:00+01:00. SendGrid holds the mail until "
            "then (72 hours at most; `newsletter cancel` calls it back); smtp and the outbox "
            "wait in the foreground (`newsletter cancel` stops them).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Send an issue to a subscriber list: everyone once, with a dry run and a ledger."""
    with _errors(as_json):
        from newsletter.delivery.providers import PROVIDERS
        from newsletter.delivery.ratelimit import rate_limit
        from newsletter.delivery.schedule import parse_at, show
        from newsletter.delivery.send import SendOptions, refuse, send_issue, send_test
        from newsletter.delivery.send import dry_run as plan
        from newsletter.delivery.stop import stop_on_signals
        from newsletter.errors import NothingSent, SendStopped

        config = _config(ctx)
        name = provider or config.env.get("NEWSLETTER_PROVIDER") or config.settings.provider
        if name not in PROVIDERS:
            raise UsageError(f"--provider {name!r}: choose one of {', '.join(PROVIDERS)}")
        options = SendOptions(
            provider=name,
            tags=tuple(tag or ()),
            templates=templates,
            retry_unknown=retry_unknown,
            sandbox=sandbox,
            force=force,
            as_new_issue=as_new_issue,
            at=parse_at(at, config) if at is not None else None,
        )
        if test_to:
            if at is not None:
                raise UsageError("--test-to sends one copy now: leave out --at")
            print_report(send_test(config, issue, test_to, options), as_json, verbose)
            return
        if to is None:  # the audience, as a list file the manifest can hash
            from newsletter.lists.audience import audience_snapshot
            from newsletter.storage.store import open_store

            with open_store(config) as store:
                to = audience_snapshot(store, config.build_dir, issue)
        if dry_run:
            checked = with_progress(
                lambda progress: plan(config, issue, to, options, on_progress=progress),
                enabled=not as_json,
                label="checking",
            )
            print_report(checked, as_json, verbose)
            refuse(checked)
            return
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError("a real send asks for confirmation; without a terminal, add --yes")
            preview = with_progress(
                lambda progress: plan(config, issue, to, options, previews=0, on_progress=progress),
                enabled=True,
                label="checking",
            )
            print_report(preview, False, False)
            refuse(preview)
            what = "validate" if sandbox else "send"
            recipients = plural(preview.to_send, "recipient")
            when = f" at {show(options.at)}" if options.at is not None else ""
            try:
                confirmed = typer.confirm(
                    f"{what.capitalize()} {preview.subject!r} to {recipients} via {name}{when}?",
                    default=False,
                )
            except typer.Abort:  # Ctrl-C (or end of input) at the prompt
                console(stderr=True).print("[yellow]interrupted[/yellow]: nothing was sent")
                raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
            if not confirmed:
                raise typer.Exit(int(ExitCode.ERROR))
        try:
            limit = rate_limit(config, name)
            with stop_on_signals() as stop:
                report = with_progress(
                    lambda progress: send_issue(
                        config,
                        issue,
                        to,
                        options,
                        on_progress=progress,
                        stop=stop,
                        on_wait=progress.wait,
                    ),
                    enabled=not as_json,
                    label=f"sending (at most {limit.text})" if limit else "sending",
                    waiting=f"until {show(options.at)}" if options.at else "to wait",
                )
        except (SendStopped, NothingSent) as exc:
            if isinstance(exc, SendStopped):
                exc.report.resume = _resume_command(ctx, issue, to, name, options)
            if not as_json:  # with --json, the error's JSON carries the report
                print_report(exc.report, as_json, verbose)
                if exc.report.resume:
                    console().print(f"To resume: {exc.report.resume}", markup=False)
            raise
        print_report(report, as_json, verbose)


def _resume_command(
    ctx: typer.Context, issue: Path, to: Path, provider: str, options: SendOptions
) -> str:
    """The command that sends to everyone this stopped send did not reach."""
    import shlex

    words = ["newsletter"]
    given = ctx.obj if isinstance(ctx.obj, Options) else Options()
    if given.config_path is not None:
        words += ["--config", str(given.config_path)]
    words += ["send", str(issue), "--to", str(to), "--provider", provider]
    for tag in options.tags:
        words += ["--tag", tag]
    if options.templates is not None:
        words += ["--templates", str(options.templates)]
    for flag, on in (
        ("--sandbox", options.sandbox),
        ("--force", options.force),
        ("--as-new-issue", options.as_new_issue),
    ):
        if on:
            words.append(flag)
    if options.at is not None and options.at > datetime.now(options.at.tzinfo):
        words += ["--at", options.at.isoformat()]  # the rest goes at the same time
    return shlex.join(words)


@app.command()
def backup(
    ctx: typer.Context,
    dest: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="Where to write the copy, e.g. backups/ledger-2025-08-01.sqlite; never "
            "overwritten.",
            show_default=False,
        ),
    ],
) -> None:
    """Copy the ledger safely (SQLite's online backup), even while a send runs."""
    with _errors():
        from newsletter.delivery.status import backup_ledger

        config = _config(ctx)
        backup_ledger(config, dest)
        console().print(
            f"backed up {show_path(config.ledger_path)} to {show_path(dest)}", markup=False
        )


@app.command()
def status(
    ctx: typer.Context,
    issue: Annotated[
        str | None,
        typer.Argument(
            metavar="[ISSUE]",
            help="The issue file or its id; without it, the sends of every issue still to go out.",
            show_default=False,
        ),
    ] = None,
    show: Annotated[
        str | None,
        typer.Option(
            "--show",
            metavar="STATE",
            help="Print the recipients in one state as CSV: sent, unknown, pending, failed "
            "or rejected.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
) -> None:
    """What the ledger says about an issue: each send, who got it and who did not, and any
    send of it waiting for its time."""
    with _errors(as_json):
        from newsletter.delivery import status as ledger_status
        from newsletter.lists.cells import CellWriter

        config = _config(ctx)
        if issue is None:
            if show is not None:
                raise UsageError("--show lists the recipients of one issue: give its ISSUE")
            upcoming = ledger_status.upcoming(config)
            if as_json:
                import json

                typer.echo(json.dumps(upcoming.to_json(), indent=2))
                return
            print_upcoming(upcoming)
            return
        issue_id = ledger_status.issue_id(issue)
        if show is not None:
            rows = ledger_status.recipients(config, issue_id, show)
            writer = CellWriter(sys.stdout, lineterminator="\n")
            writer.writerow(["email", "status", "updated_at", "provider_id", "error", "rehearsal"])
            for d in rows:
                writer.writerow(
                    [
                        d.email,
                        d.status,
                        d.updated_at,
                        d.provider_id or "",
                        d.error or "",
                        "outbox" if d.rehearsal else "",
                    ]
                )
            return
        found = ledger_status.issue_status(config, issue_id)
        if as_json:
            import json

            typer.echo(json.dumps(found.to_json(), indent=2))
            return
        print_status(found)


@app.command()
def cancel(
    ctx: typer.Context,
    issue: IssueRefArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print what it did as JSON.")] = False,
) -> None:
    """Stop a `send --at` waiting in the foreground, or call back one SendGrid holds."""
    with _errors(as_json):
        from newsletter.delivery import status as ledger_status
        from newsletter.delivery.schedule import cancel_scheduled

        config = _config(ctx)
        issue_id = ledger_status.issue_id(issue)
        done = cancel_scheduled(config, issue_id)
        if as_json:
            import json

            typer.echo(json.dumps(done.to_json(), indent=2))
            return
        print_cancel(done)


@app.command()
def unsubscribe(
    ctx: typer.Context,
    requests: Annotated[
        list[str],
        typer.Argument(
            metavar="REQUEST",
            help="Unsubscribe tokens, links or mail subjects; - reads them from stdin, one a line.",
            show_default=False,
        ),
    ],
) -> None:
    """Put the readers behind unsubscribe requests (or plain addresses) on the suppression list."""
    with _errors():
        from newsletter.lists.unsubscribe import unsubscribe as suppress
        from newsletter.storage.store import open_store

        config = _config(ctx)
        given = [
            line for r in requests for line in (sys.stdin.read().splitlines() if r == "-" else [r])
        ]
        with open_store(config) as store:
            result = suppress(config, given, store)
        out = console()
        for address in result.addresses:
            out.print(f"  {escape(address)}")
        out.print(
            f"[green]{result.added} added[/green] to the suppression list"
            + (f", {result.already} there already" if result.already else "")
        )
        if result.refused:
            err = console(stderr=True)
            for text, reason in result.refused:
                err.print(f"[red]error:[/red] {escape(text)}: {escape(reason)}")
            raise typer.Exit(int(ExitCode.ERROR))


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", metavar="ADDRESS", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", help="Port; 0 picks a free one.")
    ] = 8080,
) -> None:
    """Run the reader service: one-click unsubscribe, signups, SendGrid's event webhook."""
    with _errors():
        from newsletter.web.reader import bind, bound_url, create_app, run

        config = _config(ctx)
        app_ = create_app(config)  # a missing secret is said before anything listens
        sock = bind(host, port)
        typer.echo(f"serving {config.settings.name} on {bound_url(sock)}", err=False)
        sys.stdout.flush()
        run(app_, sock)


audience_app = PlainTyper(
    help="The audience the reader service shares: list, add, remove, import and export.",
    no_args_is_help=True,
)
app.add_typer(audience_app, name="audience")
AddressArg = Annotated[
    str, typer.Argument(metavar="ADDRESS", help="An email address.", show_default=False)
]


@audience_app.command("list")
def audience_list(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            help="Only subscribed, pending, unsubscribed, bounced or complained.",
        ),
    ] = None,
) -> None:
    """Print the audience as CSV, every column and the consent record."""
    with _errors():
        from newsletter.lists.audience import export_audience
        from newsletter.storage.store import MEMBER_STATUSES, open_store

        if status is not None and status not in MEMBER_STATUSES:
            raise UsageError(f"--status {status!r}: choose one of {', '.join(MEMBER_STATUSES)}")
        with open_store(_config(ctx)) as store:
            export_audience(store, sys.stdout, status)


@audience_app.command("add")
def audience_add(
    ctx: typer.Context,
    address: AddressArg,
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="The reader's name.")] = "",
) -> None:
    """Add a subscriber by hand (consent: added by the editor, now)."""
    with _errors():
        from newsletter.lists.audience import add_by_hand
        from newsletter.storage.store import open_store

        with open_store(_config(ctx)) as store:
            member = add_by_hand(store, address, name)
        console().print(f"{escape(member.email)}: {member.status}")


@audience_app.command("remove")
def audience_remove(ctx: typer.Context, address: AddressArg) -> None:
    """Unsubscribe an address: it is suppressed, so no send mails it again."""
    with _errors():
        from newsletter.lists.audience import remove_by_hand
        from newsletter.storage.store import open_store

        with open_store(_config(ctx)) as store:
            added = remove_by_hand(store, address)
        console().print(
            f"{escape(address)}: " + ("unsubscribed" if added else "already suppressed")
        )


@audience_app.command("resubscribe")
def audience_resubscribe(ctx: typer.Context, address: AddressArg) -> None:
    """Lift an address's suppression (after the reader asked again) and mark it subscribed."""
    with _errors():
        from newsletter.lists.audience import resubscribe_by_hand
        from newsletter.storage.store import open_store

        with open_store(_config(ctx)) as store:
            changed = resubscribe_by_hand(store, address)
        console().print(f"{escape(address)}: " + ("subscribed" if changed else "nothing to change"))


@audience_app.command("import")
def audience_import(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(metavar="FILE", help="A CSV file with an email column.")],
    suppressions: Annotated[
        bool, typer.Option("--suppressions", help="The file is a suppression list.")
    ] = False,
) -> None:
    """Import subscribers (or, with --suppressions, addresses never to mail) from CSV."""
    with _errors():
        from newsletter.lists.audience import import_audience
        from newsletter.storage.csvfiles import import_suppressions_csv
        from newsletter.storage.store import open_store

        out = console()
        with open_store(_config(ctx)) as store:
            if suppressions:
                added = import_suppressions_csv(store, path)
                out.print(f"{added} added to the suppression list")
                return
            result = import_audience(store, path)
        out.print(f"{result.added} added, {result.updated} updated")
        if result.kept_out:
            out.print(f"{len(result.kept_out)} suppressed, so not subscribed: ", end="")
            out.print(escape(", ".join(result.kept_out)))
        for line, address, why in result.skipped:
            console(stderr=True).print(
                f"[yellow]skipped:[/yellow] {escape(str(path))}:{line}: {escape(address)}: "
                f"{escape(why)}"
            )


@audience_app.command("export")
def audience_export(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(metavar="FILE", help="The CSV file to write.")],
    suppressions: Annotated[
        bool, typer.Option("--suppressions", help="Export the suppression list instead.")
    ] = False,
) -> None:
    """Write the audience (or the suppression list) to CSV; `import` reads it back unchanged."""
    with _errors():
        from newsletter.lists.audience import export_audience
        from newsletter.storage.csvfiles import export_suppressions_csv
        from newsletter.storage.store import open_store

        with open_store(_config(ctx)) as store:
            if suppressions:
                n = export_suppressions_csv(store, path)
            else:
                n = export_audience(store, path)
        console().print(f"wrote {n} rows to {escape(show_path(path))}", markup=False)


@app.command()
def archive(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", metavar="DIR", help="Output folder [default: site/].", show_default=False
        ),
    ] = None,
    drafts: Annotated[
        bool, typer.Option("--drafts", help="Include issues not sent yet and not past their date.")
    ] = False,
    templates: TemplatesOpt = None,
) -> None:
    """Build the web archive: a page per published issue, an index, Atom and RSS feeds."""
    with _errors():
        from newsletter.web.archive import build_archive

        result = build_archive(_config(ctx), out, drafts=drafts, templates=templates)
        say = console()
        pages = len(result.published)
        drafts_note = f", {len(result.drafts)} of them drafts" if result.drafts else ""
        say.print(
            f"wrote {show_path(result.out)}/: {', '.join(result.site_files)} "
            f"and {plural(pages, 'issue page')}{drafts_note}",
            markup=False,
        )
        if result.left_out:
            say.print(
                f"not published yet: {', '.join(result.left_out)} "
                "(neither sent nor past their date; --drafts shows them)",
                markup=False,
            )
        for warning in result.warnings:
            console(stderr=True).print(f"[yellow]warning:[/yellow] {escape(warning)}")


# --- after the send: bounces, complaints, provider suppressions ------------------------------


@app.command()
def bounces(
    ctx: typer.Context,
    mailbox: Annotated[
        str,
        typer.Argument(
            metavar="MAILBOX",
            help="The bounce mailbox: a Maildir folder, an mbox file, or "
            "imaps://USER@HOST[:PORT]/FOLDER (password in NEWSLETTER_IMAP_PASSWORD).",
            show_default=False,
        ),
    ],
) -> None:
    """Read returned mail: suppress hard bounces and complaints, count soft bounces."""
    with _errors():
        from newsletter.lists.aftermath import REASONS, read_bounces
        from newsletter.lists.mailboxes import open_mailbox
        from newsletter.lists.suppressions import open_sink
        from newsletter.storage.bounces import open_state

        config = _config(ctx)
        box = open_mailbox(mailbox, config.env)
        try:
            with open_state(config.state_dir) as state:
                report = read_bounces(config, box, sink=open_sink(config), state=state)
        finally:
            box.close()
        out = console()
        for email, kind, issue in report.suppressed:
            where = f" ({issue})" if issue else ""
            out.print(
                f"  {printable(email)}: {REASONS[kind]}{printable(where)}",
                markup=False,
                highlight=False,
            )
        limit = config.settings.bounces.soft_limit
        for email, streak in report.counted:
            out.print(
                f"  {printable(email)}: soft bounce, {streak} of {limit} in a row",
                markup=False,
                highlight=False,
            )
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(report.kinds.items())) or "nothing new"
        out.print(
            f"{report.read} read ({kinds}): {len(report.suppressed)} suppressed, "
            f"{len(report.counted)} soft bounces counted"
            + (f"; {report.already_processed} done before" if report.already_processed else ""),
            markup=False,
        )
        if report.nameless:
            console(stderr=True).print(
                f"[yellow]warning:[/yellow] {report.nameless} failures name no recipient; "
                "turn on bounces.verp so returned mail always says who it was for"
            )


sync_app = PlainTyper(
    help="Pull what a provider learnt after the send into the suppressions.",
    no_args_is_help=True,
)
app.add_typer(sync_app, name="sync")


@sync_app.command("sendgrid")
def sync_sendgrid(
    ctx: typer.Context,
    since: Annotated[
        datetime | None,
        typer.Option(
            "--since",
            formats=["%Y-%m-%d"],
            metavar="DATE",
            help="Read from this day (UTC) on, to backfill [default: where the last sync ended].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Pull SendGrid's bounces, blocks, invalid emails, spam reports and unsubscribes."""
    with _errors():
        from datetime import UTC

        from newsletter.lists.aftermath import REASONS
        from newsletter.lists.sendgrid_sync import sync_sendgrid as pull
        from newsletter.lists.suppressions import open_sink
        from newsletter.storage.bounces import open_state

        config = _config(ctx)
        with open_state(config.state_dir) as state:
            report = pull(
                config,
                sink=open_sink(config),
                state=state,
                since=since.replace(tzinfo=UTC) if since else None,
            )
        out = console()
        for email, kind in report.suppressed:
            out.print(f"  {printable(email)}: {REASONS[kind]}", markup=False, highlight=False)
        fetched = ", ".join(f"{n} {k}" for k, n in report.fetched.items()) or "nothing new"
        waited = f"; waited {report.waited:.0f} s for the rate limit" if report.waited else ""
        out.print(
            f"SendGrid: {fetched}: {len(report.suppressed)} suppressed, "
            f"{report.actions['counted']} blocks counted as soft bounces{waited}",
            markup=False,
        )


suppressions_app = PlainTyper(
    help="Who gets no more mail, and why: list, export, remove.",
    invoke_without_command=True,
)
app.add_typer(suppressions_app, name="suppressions")


@suppressions_app.callback()
def suppressions(
    ctx: typer.Context,
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason",
            metavar="TEXT",
            help="Only reasons containing this, e.g. bounce or complaint.",
        ),
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            "--since", formats=["%Y-%m-%d"], metavar="DATE", help="Only those added on or after."
        ),
    ] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print them as CSV, to export.")] = False,
) -> None:
    """List the suppressed addresses with why and when (remove one: suppressions remove)."""
    if ctx.invoked_subcommand is not None:
        return
    with _errors():
        from newsletter.lists.cells import CellWriter
        from newsletter.lists.suppressions import list_suppressions

        config = _config(ctx)
        rows = list_suppressions(config, reason=reason, since=since.date() if since else None)
        if as_csv:
            writer = CellWriter(sys.stdout, lineterminator="\n")
            writer.writerow(["email", "reason", "added_at"])
            for r in rows:
                writer.writerow([r.email, r.reason, r.added_at])
            return
        out = console()
        for row in rows:
            out.print(
                f"{printable(row.added_at[:10]):10}  {printable(row.email)}  "
                f"{printable(row.reason)}",
                markup=False,
                highlight=False,
            )
        out.print(f"{plural(len(rows), 'address', 'addresses')} suppressed", markup=False)


@suppressions_app.command("remove")
def suppressions_remove(
    ctx: typer.Context,
    address: Annotated[
        str,
        typer.Argument(metavar="ADDRESS", help="The address to mail again.", show_default=False),
    ],
    why: Annotated[str, typer.Option("--why", metavar="TEXT", help="Why, for the log.")] = "",
) -> None:
    """Take an address off the suppression list; logged with who and when."""
    with _errors():
        from newsletter.lists.suppressions import remove_suppression

        removal = remove_suppression(_config(ctx), address, why=why)
        console().print(
            f"removed {printable(removal.email)} ({removal.rows} row{'s' * (removal.rows != 1)}); "
            f"logged in {show_path(removal.log)}",
            markup=False,
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
