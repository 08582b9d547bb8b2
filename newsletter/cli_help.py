"""Help that reads like a man page: `send [OPTIONS] ISSUE`, `--since DATE`.

typer 0.2x labels each argument with its Python type (`ISSUE <list[Path]>`), wraps a
required one in braces in the usage line (`{ISSUE}...`), and shows an option without a
metavar as `<%Y-%m-%d>`. `PlainTyper` gives every command (including ones added later)
`PlainCommand`, which prints the argument's metavar alone, the usage line as click
always did (`ISSUE...`, `[URL]...`), and gives any option still without a metavar its
name in capitals rather than its type. The `[default: ...]` notes come from typer's
own help records, unchanged.

Contexts, formatters and parameters are typed `Any`: their classes live in typer's
private copy of click (`typer._click`), which we do not import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

F = TypeVar("F", bound=Callable[..., Any])


def _plain_metavar(param: Any) -> str:
    return str(param.metavar or param.name or "VALUE").upper()


def _argument_name(param: Any) -> str:
    return _plain_metavar(param) + ("..." if param.nargs != 1 else "")


def _name_option_values(params: list[Any]) -> None:
    """Give each option that takes a value and has no metavar its name in capitals."""
    for param in params:
        takes_value = param.param_type_name == "option" and not (
            getattr(param, "is_flag", False) or getattr(param, "count", False)
        )
        if takes_value and param.metavar is None:
            param.metavar = _plain_metavar(param)


class PlainCommand(TyperCommand):
    """A typer command whose help names values by placeholders, not Python types."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _name_option_values(self.params)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                pieces.extend(param.get_usage_pieces(ctx))
                continue
            name = _plain_metavar(param)
            name = name if param.required else f"[{name}]"
            pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments: list[tuple[str, str]] = []
        options: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((_argument_name(param), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class PlainGroup(TyperGroup):
    """A typer group (a command with subcommands) whose options read as placeholders."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _name_option_values(self.params)


class PlainTyper(typer.Typer):
    """`typer.Typer` whose commands default to `PlainCommand` and groups to `PlainGroup`."""

    def __init__(self, *args: Any, cls: type[TyperGroup] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, cls=cls or PlainGroup, **kwargs)

    def command(
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[F], F]:
        return super().command(name, cls=cls or PlainCommand, **kwargs)
