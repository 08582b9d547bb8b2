"""`newsletter.yaml` plus the environment: who sends, from where, through what.

Precedence is CLI flag > environment > `newsletter.yaml` > defaults. Secrets (API keys,
passwords, the token secret) come from the environment only, so a config file can be
committed and shared.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from newsletter.content import yamldoc
from newsletter.content.issue import Line, Url
from newsletter.content.language import Language
from newsletter.errors import ConfigError, ProblemList

CONFIG_NAME = "newsletter.yaml"


def _address(value: str) -> str:
    from newsletter.lists.addresses import validate_address

    try:
        return validate_address(value)
    except ValueError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None


def _https(value: str) -> str:
    if not value.startswith("https://"):
        raise ValueError(
            "must be an https:// URL (mail clients require it for one-click unsubscribe)"
        )
    return value.rstrip("/")


def _language(value: str) -> str:
    from newsletter.content.language import check_code

    return check_code(value)


def _words(value: dict[str, str]) -> dict[str, str]:
    from newsletter.content.language import check_words

    check_words(value)
    return value


Address = Annotated[str, AfterValidator(_address)]
HttpsUrl = Annotated[Url, AfterValidator(_https)]


def _rate(value: str) -> str:
    from newsletter.delivery.ratelimit import parse_rate

    parse_rate(value)  # ValueError says what a rate looks like
    return value.strip()


RateText = Annotated[str, AfterValidator(_rate)]


def _zone(value: str) -> str:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            "not a time zone this machine knows: give an IANA name such as Europe/Berlin, "
            "America/New_York or UTC"
        ) from None
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sender(_Model):
    email: Address
    name: Line | None = None


class Unsubscribe(_Model):
    url: HttpsUrl | None = None
    mailto: Address | None = None


def _service_url(value: str) -> str:
    host = value.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if not value.startswith("https://") and host not in ("127.0.0.1", "localhost"):
        raise ValueError(
            "must be an https:// URL (mail clients require it for one-click unsubscribe); "
            "http:// only for 127.0.0.1 or localhost"
        )
    return value.rstrip("/")


class Service(_Model):
    """The reader service (`newsletter serve`): where readers reach it, behind the proxy."""

    url: Annotated[Url, AfterValidator(_service_url)] | None = None


Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
#: Monday first, as `date.weekday()` counts.
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


class Schedule(_Model):
    """When issues come out: `newsletter new` dates a new issue on the next such day."""

    weekday: Annotated[Weekday, BeforeValidator(_lower)] = "friday"


class BounceSettings(_Model):
    """Where returned mail comes back, and how much of it suppresses an address."""

    #: The envelope sender of SMTP sends, whose mailbox `newsletter bounces` reads
    #: [default: the from address].
    address: Address | None = None
    #: Give each SMTP recipient its own signed return path (VERP), so a bounce names its
    #: recipient and issue even when the report does not.
    verp: bool = False
    #: Soft bounces (mailbox full, 4.x.x) in a row, across issues, that suppress an address.
    soft_limit: int = Field(default=3, ge=1, le=100)


class Settings(_Model):
    """What `newsletter.yaml` may hold; unknown keys are errors, so typos surface.

    Each provider's section (`smtp:`, `sendgrid:`) is declared by the provider itself:
    `settings_model` adds them, and a provider reads its own with `providers.base.section`.
    """

    name: Line
    from_: Sender = Field(alias="from")
    reply_to: Address | None = None
    postal_address: Line
    web_base_url: Url | None = None
    list_id: Line | None = None
    unsubscribe: Unsubscribe = Unsubscribe()
    #: One of the registered providers: `settings_model` limits it to their names.
    provider: Line = "outbox"
    templates: str | None = None
    outbox: str = "outbox"
    state_dir: str = ".newsletter"
    schedule: Schedule = Schedule()
    service: Service = Service()
    #: RSS or Atom feeds the editor follows: `newsletter add --from-feeds` reads them.
    sources: Annotated[list[Url], BeforeValidator(lambda v: [] if v is None else v)] = []
    bounces: BounceSettings = BounceSettings()
    #: A Babel locale: dates, the templates' fixed words and the text direction follow it.
    language: Annotated[Line, AfterValidator(_language)] = "en"
    #: The templates' fixed words, to change any of the language's defaults.
    words: Annotated[
        dict[str, Line], BeforeValidator(lambda v: {} if v is None else v), AfterValidator(_words)
    ] = {}
    #: The IANA time zone `send --at` reads a time in [default: this machine's].
    timezone: Annotated[Line, AfterValidator(_zone)] | None = None


@dataclass(frozen=True)
class Config:
    """The settings resolved against the workspace directory and the environment."""

    root: Path
    path: Path
    settings: Settings
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def language(self) -> Language:
        return Language(self.settings.language, self.settings.words)

    @property
    def templates_dir(self) -> Path | None:
        return self.root / self.settings.templates if self.settings.templates else None

    @property
    def state_dir(self) -> Path:
        return self.root / self.settings.state_dir

    @property
    def outbox_dir(self) -> Path:
        return self.root / self.settings.outbox

    @property
    def issues_dir(self) -> Path:
        return self.root / "issues"

    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    @property
    def ledger_path(self) -> Path:
        """Who was sent what: the SQLite ledger every send writes (see `ledger`)."""
        return self.state_dir / "ledger.sqlite"

    @property
    def suppressions_path(self) -> Path:
        """Addresses never to mail: unsubscribe requests and hard bounces are added here."""
        return self.root / "suppressions.csv"

    @cached_property
    def unsubscribe_url(self) -> str | None:
        """The https page that takes a token; defaults to `<web_base_url>/unsubscribe`."""
        s = self.settings
        if s.unsubscribe.url:
            return s.unsubscribe.url
        if s.service.url:
            return s.service.url + "/unsubscribe"
        if s.web_base_url and s.web_base_url.startswith("https://"):
            return s.web_base_url.rstrip("/") + "/unsubscribe"
        return None

    @cached_property
    def subscribe_url(self) -> str | None:
        """The reader service's signup page, for the archive and "Forwarded this?" lines."""
        url = self.settings.service.url
        return url + "/subscribe" if url else None

    @cached_property
    def unsubscribe_mailto(self) -> str:
        s = self.settings
        return s.unsubscribe.mailto or s.reply_to or s.from_.email

    @cached_property
    def list_id(self) -> str:
        """RFC 2919 List-Id: a stable name for the list, under the sender's domain."""
        s = self.settings
        if s.list_id:
            return s.list_id
        slug = re.sub(r"[^a-z0-9]+", "-", s.name.lower()).strip("-") or "newsletter"
        return f"{slug}.{s.from_.email.rpartition('@')[2]}"

    def issue_url(self, issue_id: str) -> str | None:
        base = self.settings.web_base_url
        return f"{base.rstrip('/')}/{issue_id}.html" if base else None


@cache
def settings_model() -> type[Settings]:
    """`Settings` with every registered provider's section, and `provider:` limited to their
    names. Built on first use rather than at import, since the providers import this module."""
    from newsletter.delivery.providers import PROVIDERS

    sections: dict[str, Any] = {
        name: (spec.settings, spec.settings())
        for name, spec in PROVIDERS.items()
        if spec.settings is not None
    }
    names: Any = Literal.__getitem__(tuple(PROVIDERS))
    return create_model("Settings", __base__=Settings, provider=(names, "outbox"), **sections)


def find_config(start: Path | None = None) -> Path:
    """The nearest `newsletter.yaml` at or above `start`, as git finds its repository."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {CONFIG_NAME} in {here} or any folder above it; "
        "run `newsletter init DIR` to make a workspace, or pass --config PATH"
    )


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config; every problem in it is reported at once."""
    path = path if path is not None else find_config()
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such config file; pass --config PATH or run `newsletter init`"
        )
    try:
        settings = yamldoc.load(path).validate(settings_model())
    except ProblemList as exc:
        raise ConfigError("\n".join(map(str, exc.problems))) from None
    return Config(
        root=path.parent.resolve(),
        path=path,
        settings=settings,
        env=dict(os.environ if env is None else env),
    )


def env_secret(env: Mapping[str, str], name: str) -> str:
    """A secret as it must go on the wire: refused, never shown, if it has a line break, a
    control character or space around it (a CRLF `.env` file, a paste with a newline). Sent
    as is it would fail in the HTTP or SMTP library, in a message that carries it."""
    value = env.get(name, "")
    if value.strip() != value or any(not c.isprintable() for c in value):
        raise ConfigError(
            f"{name} has a line break, a control character or space around it, so it cannot "
            f"be sent as it is; set it again without them (a .env file saved with Windows line "
            f"ends adds a carriage return to every value). It is not shown here."
        )
    return value


def is_loopback(host: str | None) -> bool:
    """This machine: `localhost` or a loopback IP (127.0.0.0/8, ::1), not a name like
    127.0.0.1.example.com."""
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secrets(config: Config) -> list[str]:
    """Every secret this process knows, so that error text can be scrubbed of them."""
    return env_secrets(config.env)


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """The secrets in an environment: what the CLI scrubs from anything it prints."""
    from newsletter.delivery.providers import secret_names
    from newsletter.lists.tokens import SECRET_ENV

    names = (*secret_names(), SECRET_ENV)
    return [v for n in names if len(v := env.get(n, "")) >= 4]


def redact(text: str, secrets: list[str]) -> str:
    """`text` without any form the secrets take on the wire (see `wire_forms`), nor the start
    of one that a cut left at the end of `text`."""
    if not secrets:
        return text
    pattern, forms = _redaction(tuple(secrets))
    text = pattern.sub(REDACTED, text)
    for form in forms:  # a form cut short by a truncation before the redaction
        for n in range(len(form) - 1, _MIN_PIECE - 1, -1):
            if text.endswith(form[:n]):
                return text[:-n] + REDACTED
    return text


REDACTED = "[redacted]"
#: Shorter pieces of a secret are not looked for: they would match ordinary text.
_MIN_PIECE = 8


def wire_forms(secret: str) -> set[str]:
    """Every way a secret can show up in what a server sends back or a library prints.

    As is and stripped; URL-encoded; JSON- and repr-escaped; and base64, standard and
    URL-safe, wherever it starts in a longer encoded string (SMTP AUTH PLAIN encodes
    "\\0user\\0password" as one): for each of the three byte alignments, the run of base64
    characters that depends on the secret's bytes alone.
    """
    found = {
        secret,
        secret.strip(),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
    }
    raw = secret.encode()
    for align in range(3):
        encoded = base64.b64encode(bytes(align) + raw).decode()
        start, end = -(-8 * align // 6), (8 * (align + len(raw))) // 6
        for text in (encoded, encoded.replace("+", "-").replace("/", "_")):
            found.add(text[start:end])
    return {f for f in found if f and len(f) >= min(_MIN_PIECE, len(secret))}


@functools.lru_cache(maxsize=8)
def _redaction(secrets: tuple[str, ...]) -> tuple[re.Pattern[str], list[str]]:
    """One pattern for every form of every secret, longest first; and the forms."""
    forms = sorted({f for s in secrets for f in wire_forms(s)}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, forms))), forms
