"""Per-subscriber parts filled into the once-rendered, once-inlined issue.

Templates are rendered one time per issue with *slots* where a subscriber's value
goes (`{{ subscriber.name }}`, `{{ unsubscribe_url }}`). A slot is an opaque token of
letters and digits with a random nonce, so it survives premailer's URL handling and
the editor's text can never forge one. Filling a slot is a list join, not a render:
the HTML part gets HTML-escaped values, the text part gets them as they are.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from markupsafe import Markup

from newsletter.errors import TemplateError

#: Fields every subscriber has; anything else must be a column of the subscriber list.
BUILTIN_FIELDS = ("email", "name", "unsubscribe_url")


class Part(StrEnum):
    """Which part of the mail a slot is in, as the letter inside its token: the HTML part's
    slots are filled with HTML-escaped values, the text part's with the values as they are."""

    HTML = "h"
    TEXT = "t"


@dataclass(frozen=True)
class Slot:
    field: str
    fallback: str


class Slots:
    """Hands templates a token per (field, fallback) and remembers which were asked for."""

    def __init__(self, nonce: str | None = None) -> None:
        self.nonce = nonce or secrets.token_hex(6)
        self.slots: list[Slot] = []
        self._index: dict[Slot, int] = {}

    def token(self, field: str, fallback: str = "", part: Part = Part.HTML) -> str:
        slot = Slot(field, fallback)
        if slot not in self._index:
            self._index[slot] = len(self.slots)
            self.slots.append(slot)
        return f"nl{self.nonce}{part}{self._index[slot]}x"

    def pattern(self, part: Part) -> re.Pattern[str]:
        return re.compile(f"(nl{self.nonce}{part}\\d+x)")

    def fields(self) -> set[str]:
        return {s.field for s in self.slots}


class SlotValue(Markup):
    """A slot as a template holds it: text to print as it is, not a value to test or slice.

    The value is only known per subscriber, after rendering, so `{% if subscriber.name %}`
    would always be true and `subscriber.name[:1]` would cut the token; both are refused
    here, with the way to write it. Filters that change the text (upper, title) are caught
    after rendering, by `check_slots`.
    """

    field = ""

    def __bool__(self) -> bool:
        raise TemplateError(
            f"a template tests subscriber.{self.field or 'a field'} ({{% if %}}, `or`, "
            "`default`): subscriber values are filled in after rendering, so they cannot "
            f'be tested; write {{{{ subscriber.get("{self.field or "name"}", "fallback") }}}} '
            "for a fallback"
        )

    def __getitem__(self, key: object) -> Markup:  # type: ignore[override]
        raise TemplateError(
            f"a template slices subscriber.{self.field or 'a field'} (or truncates it): "
            "subscriber values are filled in after rendering, so they can only be printed "
            f"as they are, e.g. {{{{ subscriber.{self.field or 'name'} }}}}"
        )


def check_slots(rendered: str, slots: Slots, part: Part, template: str) -> None:
    """Refuse a rendering in which a filter changed a slot: it would go out as gibberish."""
    whole = len(slots.pattern(part).findall(rendered))
    if len(re.findall(slots.nonce, rendered, re.IGNORECASE)) != whole:
        raise TemplateError(
            f"{template}: a template changes a subscriber value with a filter (such as "
            "upper or title): subscriber values are filled in after rendering, so they can "
            "only be printed as they are, e.g. {{ subscriber.name }}"
        )


class SubscriberView:
    """What `subscriber` is inside a template: attribute access yields a slot."""

    def __init__(self, slots: Slots, part: Part) -> None:
        self._slots = slots
        self._part = part

    def get(self, field: str, fallback: str = "") -> Markup:
        value = SlotValue(self._slots.token(field, str(fallback), self._part))
        value.field = field
        return value

    def __getattr__(self, field: str) -> Markup:
        if field.startswith("_"):
            raise AttributeError(field)
        return self.get(field)

    def __getitem__(self, field: str) -> Markup:
        return self.get(field)


class Filler:
    """One part (HTML or text) split at its slots, ready to be joined per subscriber."""

    def __init__(self, rendered: str, slots: Slots, part: Part) -> None:
        self.chunks = slots.pattern(part).split(rendered)
        prefix = f"nl{slots.nonce}{part}"
        self.positions = [
            (i, int(self.chunks[i][len(prefix) : -1])) for i in range(1, len(self.chunks), 2)
        ]

    def fill(self, values: Sequence[str]) -> str:
        chunks = self.chunks.copy()
        for pos, slot in self.positions:
            chunks[pos] = values[slot]
        return "".join(chunks)

    @property
    def literals(self) -> list[str]:
        """The text between slots; the message builder encodes these once."""
        return self.chunks[0::2]

    @property
    def slot_order(self) -> list[int]:
        return [slot for _, slot in self.positions]


def slot_values(slots: Slots, fields: Mapping[str, str]) -> list[str]:
    """The raw value of each slot for one subscriber, falling back where a field is empty."""
    return [fields.get(s.field) or s.fallback for s in slots.slots]


_SPECIAL = re.compile("[&<>\"']")


def escape(value: str) -> str:
    """`html.escape(value, quote=True)`, skipped for the common value that needs none."""
    return html.escape(value, quote=True) if _SPECIAL.search(value) else value


def html_values(raw: Sequence[str]) -> list[str]:
    return [escape(v) for v in raw]
