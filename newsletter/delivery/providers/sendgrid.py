"""SendGrid's v3 mail send, up to 1000 recipients a request, over kept-open connections.

The issue's HTML and text go once per request; each recipient is a personalization with
its slots as substitutions (HTML-escaped values for the HTML part's slots, raw ones for
the text part's) and its own List-Unsubscribe header. `PayloadBuilder` is pure; `send`
is the network call.

What SendGrid would lose or refuse is settled here: a recipient name with `,` or `;` goes
quoted (bare, SendGrid answers 202 and then drops the mail: sendgrid/docs#2005); a domain
goes in its xn-- form; an address with a non-ASCII local part is refused up front
(`refusal`), and one that a 400 names (`personalizations.N`) is set aside as rejected while
the rest of the batch is sent again. The API key goes to the API host only: a redirect is
never followed (urllib's would re-send the Authorization header to wherever it points).
Requests go over one kept-open connection per sending thread (`providers/http.py` says
when a request is written again and when its outcome is unknown).

Over 400 lines: the payload builder, the answer parsing and the request belong to one wire
format, and what a 400 names must be read by the code that numbered the personalizations.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import re
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage, Message
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from newsletter import __version__
from newsletter.config import RateText, env_secret, is_loopback, redact
from newsletter.content.issue import Line
from newsletter.content.personalise import Part, escape, slot_values
from newsletter.delivery.message import list_unsubscribe
from newsletter.delivery.providers.base import CampaignView, ProviderSpec, Sent, section
from newsletter.delivery.providers.http import AnswerLost, Connections, NotSent
from newsletter.delivery.providers.sendgrid_schedule import SCHEDULING
from newsletter.errors import (
    ConfigError,
    PermanentProviderError,
    TransientProviderError,
    UnknownOutcomeError,
)
from newsletter.lists.addresses import ascii_domain, needs_smtputf8

if TYPE_CHECKING:
    from newsletter.config import Config
    from newsletter.delivery.message import Recipient


class SendGridSettings(BaseModel):
    """`sendgrid:` in newsletter.yaml; the API key comes from SENDGRID_API_KEY only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: Line = "newsletter"
    asm_group_id: int | None = None
    batch_size: int = Field(default=1000, ge=1, le=1000)
    #: Requests out at once: the API takes 100-300 ms to answer each one.
    concurrent_requests: int = Field(default=4, ge=1, le=16)
    #: The plan's cap on messages, e.g. "600/min" or "50000/day"; empty: none.
    rate_limit: RateText | None = None


DEFAULT_SENDGRID_HOST = "https://api.sendgrid.com"


@dataclass(frozen=True)
class SendGridAccount:
    api_key: str = dataclasses.field(repr=False)
    host: str
    settings: SendGridSettings


def sendgrid_account(config: Config) -> SendGridAccount:
    key = env_secret(config.env, "SENDGRID_API_KEY")
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
    if host.startswith("http://") and not is_loopback(urllib.parse.urlsplit(host).hostname):
        raise ConfigError(
            f"SENDGRID_API_HOST is {host!r}: plain http:// would send the API key unencrypted; "
            f"use an https:// URL such as {DEFAULT_SENDGRID_HOST} (http:// is only for a test "
            "server on this machine)"
        )
    settings = section(config, "sendgrid", SendGridSettings)
    return SendGridAccount(api_key=key, host=host.rstrip("/"), settings=settings)


PROVIDER = ProviderSpec(
    name="sendgrid",
    ready=sendgrid_account,
    open=lambda campaign, account, sandbox: SendGridProvider(campaign, account, sandbox=sandbox),
    settings=SendGridSettings,
    secret_names=("SENDGRID_API_KEY",),
    batch_size=lambda config: section(config, "sendgrid", SendGridSettings).batch_size,
    sandbox=True,
    refusal=lambda address: refusal(address),
    rate_limit=lambda config: section(config, "sendgrid", SendGridSettings).rate_limit,
    deliver_one=lambda account, message, secrets: _deliver_one(account, message, secrets),
    schedule=SCHEDULING,
)

TIMEOUT = 60.0
SEND_PATH = "/v3/mail/send"
_FIX = {
    400: "fix the request as SendGrid says",
    401: "the API key is wrong or revoked: check SENDGRID_API_KEY",
    403: "the key lacks the Mail Send permission, or the from address is not a verified "
    "sender: check both in SendGrid",
    413: "the request is too large: lower `sendgrid.batch_size` in newsletter.yaml",
}


#: What RFC 5322 quotes in a display name; SendGrid's support names `(),:;<>@[]` as names
#: it mangles, and its docs `.`, `,` and `;`.
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_ESCAPES = re.compile(r'[\\"]')


def safe_name(name: str) -> str:
    """A recipient's name as SendGrid must get it: quoted, as RFC 5322 quotes a display name,
    if it holds a special. SendGrid puts `to.name` into the To header as it is, so
    "Johnson, Katherine" there is two addresses and the mail is dropped after a 202."""
    if not _SPECIALS.search(name):
        return name
    return '"' + _ESCAPES.sub(r"\\\g<0>", name) + '"'


def refusal(address: str) -> str | None:
    """Why SendGrid cannot take an address, known before sending; None if it can."""
    if needs_smtputf8(address):
        return (
            "SendGrid takes no address with non-ASCII characters before the @ "
            "(it has no SMTPUTF8); mail this reader another way"
        )
    return None


class PayloadBuilder:
    """The parts of every request that are the same, built once per campaign."""

    def __init__(
        self, campaign: CampaignView, settings: SendGridSettings, *, sandbox: bool = False
    ) -> None:
        headers, rendered = campaign.headers, campaign.rendered
        self.campaign = campaign
        self.slots = rendered.slots
        self.tokens = [
            (
                rendered.slots.token(slot.field, slot.fallback, Part.HTML),
                rendered.slots.token(slot.field, slot.fallback, Part.TEXT),
            )
            for slot in rendered.slots.slots
        ]
        sender: dict[str, str] = {"email": ascii_domain(headers.from_email)}
        if headers.from_name:
            sender["name"] = headers.from_name
        base: dict[str, Any] = {
            "from": sender,
            "subject": campaign.subject,
            "content": [
                {"type": "text/plain", "value": rendered.text},
                {"type": "text/html", "value": rendered.html},
            ],
            "headers": {"List-Id": f"{headers.list_name} <{headers.list_id}>"},
            "categories": [settings.category],
            "custom_args": {"issue": campaign.issue_id, "list": headers.list_id},
        }
        if headers.reply_to:
            base["reply_to"] = {"email": ascii_domain(headers.reply_to)}
        if settings.asm_group_id is not None:
            base["asm"] = {"group_id": settings.asm_group_id}
        if sandbox:
            base["mail_settings"] = {"sandbox_mode": {"enable": True}}
        if campaign.schedule is not None:  # held until then, cancellable by the batch id
            base["send_at"] = campaign.schedule.send_at
            base["batch_id"] = campaign.schedule.batch_id
        self.base = base
        self.unsubscribe_mailto = headers.unsubscribe_mailto
        self._json_tokens = [(_json(html), _json(text)) for html, text in self.tokens]
        self._frame: tuple[str, str] | None = None

    def body(self, batch: Sequence[Recipient]) -> str:
        """The request as JSON text, the shared part encoded once per campaign.

        Building and dumping a dict per recipient was most of the client's time on a large
        list; each recipient is now one string of already-encoded pieces.
        """
        if self._frame is None:
            frame = json.dumps({**self.base, "personalizations": []}, ensure_ascii=True)
            cut = frame.rindex('"personalizations": []') + len('"personalizations": [')
            self._frame = (frame[:cut], frame[cut:])
        head, tail = self._frame
        parts = [self._personalization_json(recipient) for recipient in batch]
        if not parts:
            return head + tail
        # one join makes the only large string: each large allocation costs page faults
        parts[0] = head + parts[0]
        parts[-1] += tail
        return ",".join(parts)

    def _personalization_json(self, recipient: Recipient) -> str:
        fields = recipient.fields
        substitutions = ",".join(
            f"{html_token}:{_json(escape(value))},{text_token}:{_json(value)}"
            for (html_token, text_token), value in zip(
                self._json_tokens, slot_values(self.slots, fields), strict=True
            )
        )
        address = _json(ascii_domain(recipient.email))
        if recipient.name:
            to = f'{{"email":{address},"name":{_json(safe_name(recipient.name))}}}'
        else:
            to = f'{{"email":{address}}}'
        unsubscribe = list_unsubscribe(
            recipient.unsubscribe_url, self.unsubscribe_mailto, fields.get("token", ""), fold=False
        )
        headers = ""
        if unsubscribe:
            one_click = (
                ',"List-Unsubscribe-Post":"List-Unsubscribe=One-Click"'
                if "<https://" in unsubscribe
                else ""
            )
            headers = f',"headers":{{"List-Unsubscribe":{_json(unsubscribe)}{one_click}}}'
        return f'{{"to":[{to}],"substitutions":{{{substitutions}}}{headers}}}'


#: The C string encoder `json.dumps` uses: ASCII-only JSON, so the body is the same bytes
#: whatever the transport's charset.
_json = json.encoder.encode_basestring_ascii


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait, from Retry-After or SendGrid's X-RateLimit-Reset (epoch seconds)."""
    if headers is None:
        return None
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            return None
    return None


_PERSONALIZATION = re.compile(r"personalizations[.\[](\d+)")


def _problems(text: str) -> list[tuple[str, str]] | None:
    """SendGrid's `errors[]` as (field, message) pairs; None if the body is not its JSON."""
    try:
        errors = json.loads(text).get("errors")
    except (ValueError, AttributeError):
        return None
    if not isinstance(errors, list):
        return None
    return [
        (str(error.get("field") or ""), str(error.get("message", "")))
        for error in errors
        if isinstance(error, dict)
    ]


def _errors(text: str, batch: Sequence[Recipient] = ()) -> str:
    """SendGrid's `errors[].message` (and field), shortened, or the raw body.

    A field in a personalization is named with its recipient's address as well, since
    "personalizations.417" means nothing to the editor who has to fix the list.
    """
    problems = _problems(text)
    if problems is None:
        return " ".join(text.split())[:300]
    parts = []
    for field, message in problems[:3]:
        found = _PERSONALIZATION.match(field)
        if found and int(found[1]) < len(batch):
            field += f" ({batch[int(found[1])].email})"
        parts.append((f"{field}: " if field else "") + message)
    return "; ".join(parts) or text[:300]


def _refused_recipients(text: str, size: int) -> dict[int, str] | None:
    """Personalization index -> SendGrid's reason, when every problem in a 400 is about one
    personalization of the `size` sent: those recipients can be set aside and the rest
    sent. None if any problem is about the request as a whole."""
    problems = _problems(text)
    if not problems:
        return None
    refused: dict[int, str] = {}
    for field, message in problems:
        found = _PERSONALIZATION.match(field)
        if not found or int(found[1]) >= size:
            return None
        index = int(found[1])
        refused[index] = (refused[index] + "; " if index in refused else "") + (
            f"{field}: {message}"
        )
    return refused


class SendGridProvider:
    name = "sendgrid"

    def __init__(
        self, campaign: CampaignView, account: SendGridAccount, *, sandbox: bool = False
    ) -> None:
        self.host = account.host
        self.sandbox = sandbox
        self.batch_size = account.settings.batch_size
        self.concurrency = account.settings.concurrent_requests
        self.payloads = PayloadBuilder(campaign, account.settings, sandbox=sandbox)
        self._secrets = campaign.secrets
        self._headers = {
            "Authorization": f"Bearer {account.api_key}",
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "User-Agent": f"newsletter/{__version__}",
        }
        self._connections = Connections(account.host, TIMEOUT)

    def send(self, batch: Sequence[Recipient]) -> Sent:
        """One request; if SendGrid refuses only some personalizations (a 400 naming them),
        those recipients are rejected and the rest go again: a 400 accepted nothing."""
        rejected: dict[str, str] = {}
        remaining = list(batch)
        while remaining:
            try:
                sent = self._post(remaining)
            except _Refused as refused:
                for index, reason in refused.recipients.items():
                    rejected[remaining[index].key] = self._clean(f"SendGrid refused it: {reason}")
                remaining = [
                    recipient
                    for index, recipient in enumerate(remaining)
                    if index not in refused.recipients
                ]
                continue
            return Sent(provider_id=sent, rejected=rejected)
        return Sent(provider_id=None, rejected=rejected)

    def _post(self, batch: Sequence[Recipient]) -> str | None:
        """The request for `batch`: SendGrid's message id, or an error saying what became of it."""
        body = self.payloads.body(batch).encode("ascii")
        try:
            answer = self._connections.post(SEND_PATH, body, self._headers)
        except NotSent as exc:
            raise TransientProviderError(
                f"cannot reach SendGrid at {self.host}: {self._clean(exc)}; nothing was sent"
            ) from None
        except AnswerLost as exc:
            raise UnknownOutcomeError(
                f"SendGrid at {self.host} took the request but the connection was lost before "
                f"it answered ({self._clean(exc)}); these {len(batch)} recipients may or may "
                "not get the issue"
            ) from None
        status, headers = answer.status, answer.headers
        if status >= 300:
            raise self._http_error(status, headers, answer.body, batch)
        if status == 200 and self.sandbox:
            return "sandbox"
        if status != 202:
            raise UnknownOutcomeError(f"SendGrid answered {status}, not 202, to a mail send")
        return headers.get("X-Message-Id") if headers else None

    def _clean(self, value: object) -> str:
        return redact(str(value), self._secrets)

    def _http_error(
        self,
        status: int,
        headers: Message | None,
        body: bytes,
        batch: Sequence[Recipient],
    ) -> Exception:
        # scrubbed before anything cuts it short, so no piece of a secret survives a cut
        text = self._clean(body.decode("utf-8", "replace"))
        if 300 <= status < 400:
            where = self._clean((headers.get("Location") if headers else None) or "elsewhere")
            return PermanentProviderError(
                f"SendGrid at {self.host} answered {status}, a redirect to {where}; it was not "
                "followed, since that would send the API key there, and nothing was sent. "
                "Set SENDGRID_API_HOST to the API's own https:// address (unset, it is "
                "https://api.sendgrid.com)",
                status=status,
            )
        if status == 400:
            refused = _refused_recipients(text, len(batch))
            if refused:
                return _Refused(refused)
        detail = _errors(text, batch)
        if status == 429:
            return TransientProviderError(
                f"SendGrid is rate-limiting us (429): {detail}",
                status=status,
                retry_after=_retry_after(headers),
            )
        if status >= 500:
            return TransientProviderError(
                f"SendGrid had a server error ({status}): {detail}",
                status=status,
                retry_after=_retry_after(headers),
            )
        fix = _FIX.get(status, "fix what it says before sending again")
        return PermanentProviderError(
            f"SendGrid refused the request ({status}): {detail}; {fix}", status=status
        )

    def close(self) -> None:
        """Close the kept-open connections."""
        self._connections.close()


class _Refused(Exception):
    """A 400 about some personalizations only: nothing was accepted; the rest may go again."""

    def __init__(self, recipients: dict[int, str]) -> None:
        self.recipients = recipients
        super().__init__(f"{len(recipients)} recipients refused")


def _deliver_one(account: SendGridAccount, message: EmailMessage, secrets: list[str]) -> None:
    """One plain-text message (the reader service's confirmation mail), no tracking."""
    sender = email.utils.parseaddr(str(message["From"]))
    body = {
        "personalizations": [{"to": [{"email": str(message["To"])}]}],
        "from": {"email": sender[1], **({"name": sender[0]} if sender[0] else {})},
        "subject": str(message["Subject"]),
        "content": [{"type": "text/plain", "value": message.get_content()}],
        "tracking_settings": {"click_tracking": {"enable": False}},
    }
    connections = Connections(account.host, TIMEOUT)
    try:
        answer = connections.post(
            SEND_PATH,
            json.dumps(body).encode("utf-8"),
            {
                "Authorization": f"Bearer {account.api_key}",
                "Content-Type": "application/json; charset=utf-8",
                "Accept": "application/json",
                "User-Agent": f"newsletter/{__version__}",
            },
        )
    except (NotSent, AnswerLost) as exc:
        raise TransientProviderError(
            redact(f"cannot reach SendGrid at {account.host}: {exc}", secrets)
        ) from None
    finally:
        connections.close()
    if answer.status == 429 or answer.status >= 500:
        raise TransientProviderError(
            f"SendGrid could not take the confirmation mail (HTTP {answer.status})"
        )
    if answer.status >= 300:
        raise PermanentProviderError(
            f"SendGrid refused the confirmation mail (HTTP {answer.status})", status=answer.status
        )
