"""YAML documents whose every value knows its line, so a problem can be pointed at.

Both the issue files and `newsletter.yaml` are read here: syntax errors, anchors (a
"billion laughs" file would otherwise expand without bound) and pydantic's validation
errors all become `Problem`s naming the file, the line and the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from newsletter.errors import Problem

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases: editors never need them, attackers do."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(
                problem="anchors and aliases (*name) are not allowed here; write the value out",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)


def _lines(node: yaml.Node, loc: Loc, out: dict[Loc, int]) -> None:
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            out[(*loc, name, "<key>")] = key.start_mark.line + 1
            _lines(value, (*loc, name), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*loc, i), out)


def field_name(loc: Loc) -> str:
    """`("articles", 2, "url")` -> `articles[2].url`, as an editor would write it."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class Document:
    """A parsed YAML mapping with the line of every value in it."""

    def __init__(self, path: Path, data: dict[str, Any], lines: dict[Loc, int]) -> None:
        self.path = path
        self.data = data
        self._lines = lines

    def line(self, loc: Loc) -> int | None:
        """The line of the deepest part of `loc` that exists in the file."""
        for end in range(len(loc), -1, -1):
            if (found := self._lines.get(loc[:end])) is not None:
                return found
        return None

    def problem(self, loc: Loc, message: str) -> Problem:
        return Problem(str(self.path), self.line(loc), field_name(loc) or None, message)

    def validate(self, model: type[M], context: dict[str, Any] | None = None) -> M:
        """Validate against `model`; every error becomes a `Problem` (raised as a list)."""
        try:
            return model.model_validate(self.data, context=context)
        except ValidationError as exc:
            found = sorted(self._problems(exc), key=lambda p: p.line or 0)
            raise ProblemList(found) from None

    def _problems(self, exc: ValidationError) -> Iterator[Problem]:
        for error in exc.errors(include_url=False):
            loc = tuple(p for p in error["loc"] if not _is_union_tag(p))
            message = _message(error)
            if error["type"] == "extra_forbidden":
                line = self._lines.get((*loc, "<key>")) or self.line(loc)
                yield Problem(str(self.path), line, field_name(loc), "unknown field")
            else:
                yield self.problem(loc, message)


class ProblemList(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


def _is_union_tag(part: str | int) -> bool:
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required field is missing"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message[0].lower() + message[1:] if message else kind


def load(path: Path) -> Document:
    """Read a YAML mapping; raise `ProblemList` for anything that is not one."""
    where = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProblemList([Problem(where, None, None, "no such file")]) from None
    except IsADirectoryError:
        raise ProblemList([Problem(where, None, None, "is a directory, not a file")]) from None
    if b"\x00" in raw:
        raise ProblemList([Problem(where, None, None, "is a binary file, not YAML text")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ProblemList(
            [Problem(where, line, None, "is not UTF-8 text; save the file as UTF-8")]
        ) from None
    loader = _NoAliasLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at: int | None = mark.line + 1 if mark is not None else None
        detail = exc.problem or str(exc)
        raise ProblemList([Problem(where, at, None, f"YAML syntax error: {detail}")]) from None
    except yaml.YAMLError as exc:
        raise ProblemList([Problem(where, None, None, f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    if node is None or data is None:
        raise ProblemList([Problem(where, None, None, "is empty; expected a YAML mapping")])
    if not isinstance(data, dict):
        raise ProblemList(
            [Problem(where, node.start_mark.line + 1, None, "expected a YAML mapping of fields")]
        )
    lines: dict[Loc, int] = {}
    _lines(node, (), lines)
    return Document(path, data, lines)
