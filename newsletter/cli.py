"""The `newsletter` command: parse options, call one library function, print its result.

Library modules are imported inside each command so that `newsletter render` never pays
for the SendGrid client, and errors of ours become one red line and an exit code here,
in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from newsletter import __version__
from newsletter.errors import ExitCode, NewsletterError

if TYPE_CHECKING:
    from rich.console import Console

    from newsletter.config import Config

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
            err.print(f"[red]error:[/red] {line}", markup=True, highlight=False)
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
            console.print(f"wrote {_show(path)}")
        console.print(
            f"HTML {result.rendered.html_bytes / 1024:.1f} KB, "
            f"{len(result.issue.all_articles())} articles"
        )
        for warning in result.warnings:
            _console(stderr=True).print(f"[yellow]warning:[/yellow] {warning}")


@app.command()
def check(
    issues: Annotated[list[Path], typer.Argument(help="Issue files to check.")],
    strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings too.")] = False,
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
                    err.print(f"[red]error:[/red] {problem}")
                errors += len(exc.problems)
                continue
            for finding in findings:
                color = "red" if finding.level == "error" else "yellow"
                err.print(f"[{color}]{finding.level}:[/{color}] {finding}")
            errors += sum(f.level == "error" for f in findings)
            warnings += sum(f.level == "warning" for f in findings)
            if not findings:
                out.print(f"[green]ok[/green] {path}")
        out.print(f"{len(issues)} checked: {errors} errors, {warnings} warnings")
        if errors or (strict and warnings):
            raise typer.Exit(int(ExitCode.ERROR))


@app.command()
def preview(
    issue: IssueArg,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open it in the browser.")
    ] = True,
    templates: TemplatesOpt = None,
) -> None:
    """Render an issue and open the HTML in the browser."""
    with _errors():
        from newsletter.preview import render_files

        config = _config()
        result = render_files(issue, config, config.build_dir, templates)
        _console().print(str(result.html.resolve()))
        if open_browser:
            import webbrowser

            webbrowser.open(result.html.resolve().as_uri())


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
