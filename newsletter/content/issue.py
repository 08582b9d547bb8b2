"""Issue files: what an editor writes each week, checked before anything is rendered."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from newsletter.content import yamldoc
from newsletter.errors import IssueError, Problem, ProblemList

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _text(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if _CONTROL.search(value):
        raise ValueError("contains a control character; remove it")
    return value


def _one_line(value: str) -> str:
    value = _text(value)
    if len(value.splitlines()) > 1:  # \n, \r, and \x85, \u2028, \u2029 too
        raise ValueError("must be a single line")
    return value


def http_url(value: str) -> str:
    """An absolute http(s) URL: mail clients open nothing else, and relative links break."""
    value = value.strip()
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or any(c.isspace() or not c.isprintable() for c in value)
    ):
        raise ValueError(f"not an absolute http(s) URL: {value!r}")
    return value


Text = Annotated[str, AfterValidator(_text)]
Line = Annotated[str, AfterValidator(_one_line)]
Url = Annotated[str, AfterValidator(http_url)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Image(_Model):
    url: Url
    alt: Line = Field(description="What the image shows, for screen readers and blocked images.")
    # The image file's own size, when the editor knows it: pages reserve the space before
    # it loads, and the mail gets a height that matches its 536-pixel width.
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)


class Article(_Model):
    headline: Line
    summary: Text
    url: Url
    source: Line | None = None
    #: The button's words; None: the language's `read_more` ("Read More", "Weiterlesen").
    link_text: Line | None = None
    image: Image | None = None
    #: Set by `newsletter add`: the summary is the page's own teaser, not the editor's words.
    #: `check` reports it until the editor rewrites the summary and deletes this line.
    summary_from: Literal["page"] | None = None


class Section(_Model):
    title: Line
    intro: Text | None = None
    articles: list[Article] = Field(min_length=1)


class Issue(_Model):
    """One issue of the newsletter, as written in `issues/<date>-<slug>.yaml`."""

    title: Line
    date: dt.date
    subject: Line
    preheader: Line | None = None
    intro: Text | None = None
    articles: list[Article] = []
    sections: list[Section] = []
    id: str = Field(default="", exclude=True)
    _doc: yamldoc.Document | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        context = info.context or {}
        if "subject" not in data and "title" in data:
            data["subject"] = data["title"]
        if "date" not in data and context.get("date") is not None:
            data["date"] = context["date"]
        data["id"] = context.get("id", "")
        return data

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if len(value) > 200:
            raise ValueError(f"is {len(value)} characters; keep it under 78")
        return value

    @model_validator(mode="after")
    def _has_articles(self) -> Issue:
        if not self.articles and not self.sections:
            raise ValueError("an issue needs `articles` or `sections` with at least one article")
        return self

    def all_articles(self) -> list[Article]:
        return [*self.articles, *(a for s in self.sections for a in s.articles)]

    def located_articles(self) -> list[tuple[yamldoc.Loc, Article]]:
        """Each article with where it sits in the file, for messages that point at it."""
        found: list[tuple[yamldoc.Loc, Article]] = [
            (("articles", i), a) for i, a in enumerate(self.articles)
        ]
        for si, section in enumerate(self.sections):
            found += [(("sections", si, "articles", i), a) for i, a in enumerate(section.articles)]
        return found

    def where(self, loc: yamldoc.Loc) -> tuple[str, int | None]:
        """The file and line of a field, for the preflight's messages."""
        if self._doc is None:
            return (self.id or "issue", None)
        return (str(self._doc.path), self._doc.line(loc))


_STEM = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:-.*)?$")


def load_issue(path: Path) -> Issue:
    """Load and validate an issue file; every problem in it is reported at once."""
    try:
        doc = yamldoc.load(path)
        match = _STEM.match(path.stem)
        date = None
        if match:
            try:
                date = dt.date.fromisoformat(match.group(1))
            except ValueError:
                date = None
        if "date" not in doc.data and date is None:
            raise ProblemList(
                [
                    doc.problem(
                        ("date",),
                        "required: add `date: YYYY-MM-DD` or name the file "
                        "<YYYY-MM-DD>-<slug>.yaml",
                    )
                ]
            )
        try:
            issue = doc.validate(Issue, context={"date": date, "id": path.stem})
        except ProblemList as exc:
            raise ProblemList(_blame_the_title(doc, exc.problems)) from None
        issue._doc = doc
        return issue
    except ProblemList as exc:
        raise IssueError(exc.problems) from None


def _blame_the_title(doc: yamldoc.Document, problems: list[Problem]) -> list[Problem]:
    """Without a `subject:`, the subject is the title: what is wrong with it is the title's."""
    if "subject" in doc.data:
        return problems
    about_title = {p.message for p in problems if p.field == "title"}
    found = []
    for problem in problems:
        if problem.field == "subject":
            if problem.message in about_title:
                continue
            problem = doc.problem(("title",), f"as the subject (none is given), {problem.message}")
        found.append(problem)
    return sorted(found, key=lambda p: p.line or 0)
