"""`newsletter.yaml` plus the environment: who sends, from where, through what.

Precedence is CLI flag > environment > `newsletter.yaml` > defaults. Secrets (API keys,
passwords, the token secret) come from the environment only, so a config file can be
committed and shared.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from newsletter.content import yamldoc
from newsletter.content.issue import Line, Url
from newsletter.errors import ConfigError

CONFIG_NAME = "newsletter.yaml"
ProviderName = Literal["outbox", "smtp", "sendgrid"]


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


Address = Annotated[str, AfterValidator(_address)]
HttpsUrl = Annotated[Url, AfterValidator(_https)]


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


class SendGridSettings(_Model):
    category: Line = "newsletter"
    asm_group_id: int | None = None
    batch_size: int = Field(default=1000, ge=1, le=1000)
    #: Requests out at once: the API takes 100-300 ms to answer each one.
    concurrent_requests: int = Field(default=4, ge=1, le=16)


class SMTPSettings(_Model):
    host: Line = "localhost"
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    user: Line | None = None
    timeout: float = Field(default=30.0, gt=0)


Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
#: Monday first, as `date.weekday()` counts.
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


class Schedule(_Model):
    """When issues come out: `newsletter new` dates a new issue on the next such day."""

    weekday: Annotated[Weekday, BeforeValidator(_lower)] = "friday"


class Settings(_Model):
    """What `newsletter.yaml` may hold; unknown keys are errors, so typos surface."""

    name: Line
    from_: Sender = Field(alias="from")
    reply_to: Address | None = None
    postal_address: Line
    web_base_url: Url | None = None
    list_id: Line | None = None
    unsubscribe: Unsubscribe = Unsubscribe()
    provider: ProviderName = "outbox"
    templates: str | None = None
    outbox: str = "outbox"
    state_dir: str = ".newsletter"
    sendgrid: SendGridSettings = SendGridSettings()
    smtp: SMTPSettings = SMTPSettings()
    schedule: Schedule = Schedule()
    service: Service = Service()


@dataclass(frozen=True)
class Config:
    """The settings resolved against the workspace directory and the environment."""

    root: Path
    path: Path
    settings: Settings
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

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
        settings = yamldoc.load(path).validate(Settings)
    except yamldoc.ProblemList as exc:
        raise ConfigError("\n".join(map(str, exc.problems))) from None
    return Config(
        root=path.parent.resolve(),
        path=path,
        settings=settings,
        env=dict(os.environ if env is None else env),
    )


DEFAULT_SENDGRID_HOST = "https://api.sendgrid.com"
_SMTP_PORTS = {"ssl": 465, "starttls": 587, "none": 25}


@dataclass(frozen=True)
class SMTPServer:
    """Where and how to reach the SMTP server, settled from config and environment."""

    host: str
    port: int
    security: str
    user: str | None
    password: str | None = field(repr=False)
    timeout: float


@dataclass(frozen=True)
class SendGridAccount:
    api_key: str = field(repr=False)
    host: str


def smtp_server(config: Config, host: str | None = None, port: int | None = None) -> SMTPServer:
    """CLI flag > environment > `smtp:` in newsletter.yaml > defaults."""
    env, s = config.env, config.settings.smtp
    security = env.get("SMTP_SECURITY") or s.security
    if security not in _SMTP_PORTS:
        raise ConfigError(f"SMTP_SECURITY is {security!r}; use starttls, ssl or none")
    raw_port = port or env.get("SMTP_PORT") or s.port or _SMTP_PORTS[security]
    try:
        number = int(raw_port)
    except ValueError:
        raise ConfigError(f"SMTP_PORT is {raw_port!r}; it must be a port number") from None
    return SMTPServer(
        host=host or env.get("SMTP_HOST") or s.host,
        port=number,
        security=security,
        user=env.get("SMTP_USER") or s.user,
        password=env.get("SMTP_PASSWORD") or None,
        timeout=s.timeout,
    )


def sendgrid_account(config: Config) -> SendGridAccount:
    key = config.env.get("SENDGRID_API_KEY", "").strip()
    if not key:
        raise ConfigError(
            "SENDGRID_API_KEY is not set; create a key with the Mail Send permission in "
            "SendGrid (Settings > API Keys) and export it, or use --provider outbox"
        )
    host = config.env.get("SENDGRID_API_HOST", "").strip() or DEFAULT_SENDGRID_HOST
    if not host.startswith(("https://", "http://")):
        raise ConfigError(
            f"SENDGRID_API_HOST is {host!r}; give a URL such as {DEFAULT_SENDGRID_HOST}"
        )
    return SendGridAccount(api_key=key, host=host.rstrip("/"))


def secrets(config: Config) -> list[str]:
    """Every secret this process knows, so that error text can be scrubbed of them."""
    names = ("SENDGRID_API_KEY", "SMTP_PASSWORD", "NEWSLETTER_SECRET")
    return [v for n in names if len(v := config.env.get(n, "")) >= 4]


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text
