"""Issue -> HTML and plain text, rendered once and CSS-inlined once per issue.

The result still holds slots for per-subscriber values (see `personalise`), so sending
to a million people costs one render and one premailer pass, not a million.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2

from newsletter.config import Config
from newsletter.content import markup
from newsletter.content.issue import Article, Issue
from newsletter.content.language import Language
from newsletter.content.personalise import (
    Filler,
    Part,
    Slots,
    SubscriberView,
    check_slots,
    html_values,
    slot_values,
)
from newsletter.errors import TemplateError

PACKAGE_TEMPLATES = Path(__file__).parent.parent / "templates"
HTML_TEMPLATE = "email.html"
TEXT_TEMPLATE = "email.txt"
#: Gmail clips a message whose HTML is over 102 KB and hides the rest behind a link.
GMAIL_CLIP_BYTES = 102 * 1024


@dataclass(frozen=True)
class Group:
    title: str | None
    intro: str | None
    articles: list[Article]


@dataclass(frozen=True)
class IssueView:
    """The issue as templates see it: sections flattened into groups, the date spelled out."""

    issue: Issue
    language: Language = field(default_factory=Language)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.issue, name)

    @property
    def date_text(self) -> str:
        return self.language.date(self.issue.date)

    @property
    def groups(self) -> list[Group]:
        groups = [Group(None, None, self.issue.articles)] if self.issue.articles else []
        groups += [Group(s.title, s.intro, s.articles) for s in self.issue.sections]
        return groups


@dataclass(frozen=True)
class Rendered:
    """One issue, rendered and inlined, with slots still open for each subscriber."""

    issue: Issue
    subject: str
    html: str
    text: str
    slots: Slots
    warnings: list[str] = field(default_factory=list)

    @cached_property
    def html_filler(self) -> Filler:
        return Filler(self.html, self.slots, Part.HTML)

    @cached_property
    def text_filler(self) -> Filler:
        return Filler(self.text, self.slots, Part.TEXT)

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode("utf-8"))

    def personalise(self, fields: Mapping[str, str]) -> tuple[str, str]:
        """HTML and text for one subscriber: two list joins, no rendering."""
        raw = slot_values(self.slots, fields)
        return self.html_filler.fill(html_values(raw)), self.text_filler.fill(raw)


def environment(templates: Path | None) -> jinja2.Environment:
    """User templates first, then the packaged defaults, so one file can be overridden alone."""
    folders = [str(templates)] if templates is not None else []
    if templates is not None and not templates.is_dir():
        raise TemplateError(
            f"{templates}: no such templates folder; fix `templates:` or --templates"
        )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*folders, str(PACKAGE_TEMPLATES)]),
        autoescape=jinja2.select_autoescape(["html", "htm"], default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["markdown"] = markup.to_html
    env.filters["markdown_inline"] = markup.inline_html
    env.filters["markdown_text"] = markup.to_text
    env.filters["fill"] = markup.fill
    return env


def _context(issue: Issue, config: Config, slots: Slots, part: Part) -> dict[str, Any]:
    s = config.settings
    view = SubscriberView(slots, part)
    language = config.language
    return {
        "issue": IssueView(issue, language),
        "newsletter": {
            "name": s.name,
            "postal_address": s.postal_address,
            "web_base_url": s.web_base_url,
            "from_name": s.from_.name or s.name,
            "language": language.tag,
            "direction": language.direction,
            "subscribe_url": config.subscribe_url,
        },
        "words": language.words,
        "view_url": config.issue_url(issue.id),
        "subscriber": view,
        "unsubscribe_url": view.get("unsubscribe_url"),
    }


def _render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template {exc.name} not found in {_searched(env)}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.filename or exc.name}:{exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{name}: {exc.message}") from None
    except TemplateError as exc:  # a slot misused (personalise.SlotValue)
        raise TemplateError(f"{_where(exc) or name}: {exc}") from None


def _where(exc: BaseException) -> str | None:
    """`file:line` of the template line running when `exc` was raised, from the traceback
    Jinja rewrites to point into templates."""
    where, tb = None, exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.endswith(".py") and not filename.startswith("<"):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def _searched(env: jinja2.Environment) -> str:
    loader = env.loader
    paths = getattr(loader, "searchpath", [])
    return ", ".join(paths) or "the templates folder"


def inline_css(html: str) -> str:
    """premailer moves every CSS rule into style attributes; media queries stay in <head>."""
    from premailer import Premailer  # imported here: it pulls in lxml and cssutils

    return str(
        Premailer(
            html,
            keep_style_tags=False,
            strip_important=False,
            remove_classes=False,
            allow_network=False,
            disable_validation=True,
            # keep width="600" for Outlook; CSS max-width makes it fluid elsewhere
            # and no height="auto" on images (not a valid attribute value)
            disable_basic_attributes=["width", "height"],
            cssutils_logging_level=logging.CRITICAL,
        ).transform()
    )


def render_issue(issue: Issue, config: Config, templates: Path | None = None) -> Rendered:
    """Render both parts once and inline the CSS once."""
    env = environment(templates if templates is not None else config.templates_dir)
    slots = Slots()
    html = inline_css(_render(env, HTML_TEMPLATE, _context(issue, config, slots, Part.HTML)))
    text = _render(env, TEXT_TEMPLATE, _context(issue, config, slots, Part.TEXT))
    check_slots(html, slots, Part.HTML, HTML_TEMPLATE)
    check_slots(text, slots, Part.TEXT, TEXT_TEMPLATE)
    warnings = []
    size = len(html.encode("utf-8"))
    if size > GMAIL_CLIP_BYTES:
        warnings.append(
            f"the HTML is {size / 1024:.0f} KB; Gmail clips messages over 102 KB "
            "(shorten summaries or split the issue)"
        )
    return Rendered(issue, issue.subject, html, text, slots, warnings)
