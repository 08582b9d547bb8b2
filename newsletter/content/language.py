"""The language a newsletter is written in: its fixed words, its dates and its direction.

`language:` in newsletter.yaml is a locale Babel knows (`en`, `de`, `es`, `he`, `pt_BR`);
dates are spelled by Babel in that locale, the words come from `words:` in the config,
else from the defaults below for that language, else English. Right-to-left scripts
(Hebrew, Arabic, Persian) get dir="rtl".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from babel import Locale

#: The words the templates print, in English. A `words:` key must be one of these.
ENGLISH = {
    "greeting": "Hi",
    "greeting_fallback": "there",
    "view_in_browser": "View this issue in your browser",
    "view_in_browser_short": "View in browser",
    "receiving": "You are receiving %s because you subscribed as %s.",
    "forwarded": "Forwarded this? Subscribe at",
    "unsubscribe": "Unsubscribe",
    "read_more": "Read More",
    # a Babel (CLDR) date pattern; empty: the locale's own long date
    "date_format": "d MMMM y",
    # the web archive and its feeds
    "skip_to_content": "Skip to content",
    "all_issues": "All issues",
    "every_issue": "Every issue of %s",
    "no_issues": "No issues yet.",
    "draft": "Draft",
    "more_issues": "More issues",
    "older_issue": "Older issue",
    "newer_issue": "Newer issue",
    "subscribe_by_email": "Get %s by email",
    "subscribe": "Subscribe",
    "follow_in_feed_reader": "Follow it in a feed reader:",
    "or": "or",
}
DEFAULTS: dict[str, dict[str, str]] = {
    "en": ENGLISH,
    "de": {
        "greeting": "Hallo",
        "greeting_fallback": "zusammen",
        "view_in_browser": "Diese Ausgabe im Browser ansehen",
        "view_in_browser_short": "Im Browser ansehen",
        "receiving": "Sie erhalten %s, weil Sie sich als %s angemeldet haben.",
        "forwarded": "Weitergeleitet bekommen? Hier anmelden:",
        "unsubscribe": "Abbestellen",
        "read_more": "Weiterlesen",
        "date_format": "d. MMMM y",
        "skip_to_content": "Zum Inhalt springen",
        "all_issues": "Alle Ausgaben",
        "every_issue": "Alle Ausgaben von %s",
        "no_issues": "Noch keine Ausgaben.",
        "draft": "Entwurf",
        "more_issues": "Weitere Ausgaben",
        "older_issue": "Ältere Ausgabe",
        "newer_issue": "Neuere Ausgabe",
        "subscribe_by_email": "%s per E-Mail erhalten",
        "subscribe": "Abonnieren",
        "follow_in_feed_reader": "Im Feedreader folgen:",
        "or": "oder",
    },
    "es": {
        "greeting": "Hola",
        "greeting_fallback": "a todos",
        "view_in_browser": "Ver este número en el navegador",
        "view_in_browser_short": "Ver en el navegador",
        "receiving": "Recibes %s porque te suscribiste como %s.",
        "forwarded": "¿Te lo reenviaron? Suscríbete en",
        "unsubscribe": "Darse de baja",
        "read_more": "Leer más",
        "date_format": "d 'de' MMMM 'de' y",
        "skip_to_content": "Saltar al contenido",
        "all_issues": "Todos los números",
        "every_issue": "Todos los números de %s",
        "no_issues": "Aún no hay números.",
        "draft": "Borrador",
        "more_issues": "Más números",
        "older_issue": "Número anterior",
        "newer_issue": "Número siguiente",
        "subscribe_by_email": "Recibe %s por correo",
        "subscribe": "Suscribirse",
        "follow_in_feed_reader": "Síguelo en un lector de feeds:",
        "or": "o",
    },
    "he": {
        "greeting": "שלום",
        "greeting_fallback": "לכולם",
        "view_in_browser": "לצפייה בגיליון בדפדפן",
        "view_in_browser_short": "צפייה בדפדפן",
        "receiving": "קיבלת את %s כי נרשמת בכתובת %s.",
        "forwarded": "קיבלת את זה בהעברה? להרשמה:",
        "unsubscribe": "ביטול הרשמה",
        "read_more": "להמשך קריאה",
        "date_format": "",
        "skip_to_content": "דילוג לתוכן",
        "all_issues": "כל הגיליונות",
        "every_issue": "כל הגיליונות של %s",
        "no_issues": "עדיין אין גיליונות.",
        "draft": "טיוטה",
        "more_issues": "גיליונות נוספים",
        "older_issue": "הגיליון הקודם",
        "newer_issue": "הגיליון הבא",
        "subscribe_by_email": "לקבלת %s בדוא״ל",
        "subscribe": "הרשמה",
        "follow_in_feed_reader": "למעקב בקורא פידים:",
        "or": "או",
    },
}


#: The words with `%s` in them, and what each `%s` stands for, in order.
PLACEHOLDERS = {
    "receiving": ("the newsletter's name", "the reader's address"),
    "every_issue": ("the newsletter's name",),
    "subscribe_by_email": ("the newsletter's name",),
}


@dataclass(frozen=True)
class Language:
    code: str = "en"
    overrides: Mapping[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """The BCP 47 tag for lang="...": `pt_BR` -> `pt-BR`."""
        return self.code.replace("_", "-")

    @property
    def direction(self) -> str:
        return "rtl" if _locale(self.code).character_order == "right-to-left" else "ltr"

    @property
    def words(self) -> dict[str, str]:
        base = DEFAULTS.get(self.code) or DEFAULTS.get(self.code.split("_")[0], {})
        return {**ENGLISH, **base, **self.overrides}

    def date(self, day: dt.date) -> str:
        from babel.dates import format_date

        return format_date(day, self.words["date_format"] or "long", locale=self.code)


@lru_cache(maxsize=8)
def _locale(code: str) -> Locale:
    from babel import Locale

    return Locale.parse(code)


def check_code(code: str) -> str:
    """A locale Babel knows, or ValueError with what to write instead."""
    from babel import Locale, UnknownLocaleError

    try:
        Locale.parse(code)
    except (UnknownLocaleError, ValueError):
        raise ValueError(
            f"unknown language {code!r}: use a code such as en, de, es, he or pt_BR"
        ) from None
    return code


def check_words(words: Mapping[str, str]) -> Mapping[str, str]:
    unknown = sorted(set(words) - set(ENGLISH))
    if unknown:
        raise ValueError(f"unknown words {unknown}: the templates use {sorted(ENGLISH)}")
    for key, needs in PLACEHOLDERS.items():
        word = words.get(key)
        if word is not None and word.replace("%%", "").count("%s") != len(needs):
            count = "two %s" if len(needs) == 2 else "one %s"
            raise ValueError(f"words.{key} needs {count}, for {' and '.join(needs)}")
    if words.get("date_format"):
        from babel.dates import format_date

        try:
            format_date(dt.date(2025, 8, 1), words["date_format"], locale="en")
        except (ValueError, KeyError, AttributeError) as exc:
            raise ValueError(f"words.date_format is not a CLDR date pattern: {exc}") from None
    return words
