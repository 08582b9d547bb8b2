"""YAML documents whose every value knows its line, so a problem can be pointed at.

Both the issue files and `newsletter.yaml` are read here: syntax errors, anchors (a
"billion laughs" file would otherwise expand without bound), nesting deep enough to exhaust
the parser's recursion, a key given twice (YAML would silently keep the last), escapes that
are no text, and pydantic's validation errors all become `Problem`s naming the file, the
line and the field. Timestamps are read as text, so that the schema judges a bad date.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from newsletter.errors import Problem, ProblemList

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


#: Far deeper than any issue or config file goes (an issue needs 7 levels), and far below
#: where PyYAML's recursive composer would hit Python's recursion limit.
MAX_DEPTH = 50


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (editors never need them, attackers do) and nesting
    deeper than `MAX_DEPTH`, and reads timestamps as text for the schema to check."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(
                problem="anchors and aliases (*name) are not allowed here; write the value out",
                problem_mark=event.start_mark,
            )
        if self._depth >= MAX_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(
                problem=f"nested more than {MAX_DEPTH} levels deep; is an indent or a bracket off?",
                problem_mark=event.start_mark,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# `date: 2025-02-30` would raise a bare ValueError inside PyYAML; as text, the schema says
# which field and line is wrong, like any other bad value.
_NoAliasLoader.add_constructor(
    "tag:yaml.org,2002:timestamp",
    yaml.SafeLoader.construct_yaml_str,  # type: ignore[type-var]
)
# Escapes that YAML reads but that are no text: \0, and \ud800 (half of a UTF-16 pair),
# which no UTF-8 encoder takes. A raw NUL byte is refused before parsing.
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


def _lines(
    node: yaml.Node, loc: Loc, out: dict[Loc, int], problems: list[Problem], where: str
) -> None:
    """Record the line of every value; note keys given twice and text that is not Unicode."""
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            line = key.start_mark.line + 1
            if _NOT_TEXT.search(name):
                problems.append(_not_unicode(where, line, loc, "a key"))
                name = _NOT_TEXT.sub("\ufffd", name)
            elif name in first:
                message = f"given twice (first on line {first[name]}); keep one"
                problems.append(Problem(where, line, field_name((*loc, name)), message))
            first.setdefault(name, line)
            out[(*loc, name, "<key>")] = line
            _lines(value, (*loc, name), out, problems, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*loc, i), out, problems, where)
    elif isinstance(node, yaml.ScalarNode) and _NOT_TEXT.search(node.value):
        problems.append(_not_unicode(where, node.start_mark.line + 1, loc, "the value"))


def _not_unicode(where: str, line: int, loc: Loc, what: str) -> Problem:
    return Problem(
        where,
        line,
        field_name(loc) or None,
        f"{what} contains an escape that is no text (\\0, or half of a UTF-16 pair such as "
        "\\uD800); write the character itself, or \\U0001F600 for one beyond \\uFFFF",
    )


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
    problems: list[Problem] = []
    _lines(node, (), lines, problems, where)
    if problems:
        raise ProblemList(problems)
    return Document(path, data, lines)
