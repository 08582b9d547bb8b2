"""SendGrid's v3 mail send, through the `sendgrid` library, up to 1000 recipients a request.

The issue's HTML and text go once per request; each recipient is a personalization with
its slots as substitutions (HTML-escaped values for the HTML part's slots, raw ones for
the text part's) and its own List-Unsubscribe header. `build_payload` is pure; `send`
is the single network call.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import re
import time
import urllib.error
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from newsletter.config import redact
from newsletter.content.issue import Line
from newsletter.content.personalise import Part, escape, slot_values
from newsletter.delivery.message import list_unsubscribe
from newsletter.delivery.providers.base import CampaignView, ProviderSpec, Sent, section
from newsletter.errors import (
    ConfigError,
    PermanentProviderError,
    TransientProviderError,
    UnknownOutcomeError,
)

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


DEFAULT_SENDGRID_HOST = "https://api.sendgrid.com"


@dataclass(frozen=True)
class SendGridAccount:
    api_key: str = field(repr=False)
    host: str
    settings: SendGridSettings


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
)

TIMEOUT = 60.0
#: python_http_client's logger: it writes request headers (the API key) and bodies at DEBUG.
_CLIENT_LOGGER = "python_http_client.client"
_JSON_UTF8 = {"Content-Type": "application/json; charset=utf-8"}
_FIX = {
    400: "fix the request as SendGrid says",
    401: "the API key is wrong or revoked: check SENDGRID_API_KEY",
    403: "the key lacks the Mail Send permission, or the from address is not a verified "
    "sender: check both in SendGrid",
    413: "the request is too large: lower `sendgrid.batch_size` in newsletter.yaml",
}


class PayloadBuilder:
    """The parts of every request that are the same, built once per campaign."""

    def __init__(
        self, campaign: CampaignView, settings: SendGridSettings, *, sandbox: bool = False
    ) -> None:
        h, r = campaign.headers, campaign.rendered
        self.campaign = campaign
        self.slots = r.slots
        self.tokens = [
            (
                r.slots.token(s.field, s.fallback, Part.HTML),
                r.slots.token(s.field, s.fallback, Part.TEXT),
            )
            for s in r.slots.slots
        ]
        sender: dict[str, str] = {"email": h.from_email}
        if h.from_name:
            sender["name"] = h.from_name
        base: dict[str, Any] = {
            "from": sender,
            "subject": campaign.subject,
            "content": [
                {"type": "text/plain", "value": r.text},
                {"type": "text/html", "value": r.html},
            ],
            "headers": {"List-Id": f"{h.list_name} <{h.list_id}>"},
            "categories": [settings.category],
            "custom_args": {"issue": campaign.issue_id, "list": h.list_id},
        }
        if h.reply_to:
            base["reply_to"] = {"email": h.reply_to}
        if settings.asm_group_id is not None:
            base["asm"] = {"group_id": settings.asm_group_id}
        if sandbox:
            base["mail_settings"] = {"sandbox_mode": {"enable": True}}
        self.base = base
        self.unsubscribe_mailto = h.unsubscribe_mailto
        self._json_tokens = [(_json(h_), _json(t_)) for h_, t_ in self.tokens]
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
        parts = [self._personalization_json(r) for r in batch]
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
        if recipient.name:
            to = f'{{"email":{_json(recipient.email)},"name":{_json(recipient.name)}}}'
        else:
            to = f'{{"email":{_json(recipient.email)}}}'
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


class _Body:
    """A JSON body as python_http_client takes it: it sends `body.encode("utf-8")` as is.

    The library also formats what it sends into a debug message on every request, whether
    or not debug logging is on. For 1,000 recipients the repr of the bytes took half as long
    as building the body, and had debug logging been on it would have written every address
    in the batch to the log. A memoryview of them formats as its address, and is sent
    without a copy.
    """

    __slots__ = ("data",)

    def __init__(self, text: str) -> None:
        self.data = text.encode("ascii")

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> memoryview:
        return memoryview(self.data)


class _Redact(logging.Filter):
    """Scrub our secrets from the client library's debug log (it logs the API key header)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), self.secrets), ()
        return True


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


def _errors(body: bytes | str | None, batch: Sequence[Recipient] = ()) -> str:
    """SendGrid's `errors[].message` (and field), shortened, or the raw body.

    A field in a personalization is named with its recipient's address as well, since
    "personalizations.417" means nothing to the editor who has to fix the list.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        errors = json.loads(text).get("errors") or []
        parts = []
        for e in errors[:3]:
            field = str(e.get("field") or "")
            found = _PERSONALIZATION.match(field)
            if found and int(found[1]) < len(batch):
                field += f" ({batch[int(found[1])].email})"
            parts.append((f"{field}: " if field else "") + str(e.get("message", "")))
        return "; ".join(parts) or text[:300]
    except (ValueError, AttributeError):
        return " ".join(text.split())[:300]


class SendGridProvider:
    name = "sendgrid"

    def __init__(
        self, campaign: CampaignView, account: SendGridAccount, *, sandbox: bool = False
    ) -> None:
        from sendgrid import SendGridAPIClient  # only a send pays for importing it

        self.host = account.host
        self.sandbox = sandbox
        self.batch_size = account.settings.batch_size
        self.concurrency = account.settings.concurrent_requests
        self.payloads = PayloadBuilder(campaign, account.settings, sandbox=sandbox)
        self._secrets = campaign.secrets
        self._client = SendGridAPIClient(api_key=account.api_key, host=account.host)
        self._redact = _Redact(self._secrets)
        logging.getLogger(_CLIENT_LOGGER).addFilter(self._redact)

    def send(self, batch: Sequence[Recipient]) -> Sent:
        from python_http_client.exceptions import HTTPError

        body = _Body(self.payloads.body(batch))
        try:
            # With a Content-Type other than the bare "application/json", python_http_client
            # sends body.encode("utf-8") rather than json.dumps-ing the body again.
            response = self._client.client.mail.send.post(
                request_body=body, request_headers=_JSON_UTF8, timeout=TIMEOUT
            )
        except HTTPError as exc:
            raise self._http_error(exc, batch) from None
        except urllib.error.URLError as exc:
            # urllib wraps errors while *sending* the request: SendGrid never got all of it
            raise TransientProviderError(
                f"cannot reach SendGrid at {self.host}: {self._clean(exc.reason)}; nothing was sent"
            ) from None
        except (http.client.HTTPException, OSError) as exc:
            raise UnknownOutcomeError(
                f"SendGrid at {self.host} took the request but the connection was lost before "
                f"it answered ({type(exc).__name__}); these {len(batch)} recipients may or may "
                "not get the issue"
            ) from None
        status = response.status_code
        if status == 200 and self.sandbox:
            return Sent(provider_id="sandbox")
        if status != 202:
            raise UnknownOutcomeError(f"SendGrid answered {status}, not 202, to a mail send")
        headers = response.headers
        return Sent(provider_id=headers.get("X-Message-Id") if headers else None)

    def _clean(self, value: object) -> str:
        return redact(str(value), self._secrets)

    def _http_error(
        self, exc: Any, batch: Sequence[Recipient]
    ) -> TransientProviderError | PermanentProviderError:
        status = int(exc.status_code)
        detail = self._clean(_errors(exc.body, batch))
        if status == 429:
            return TransientProviderError(
                f"SendGrid is rate-limiting us (429): {detail}",
                status=status,
                retry_after=_retry_after(exc.headers),
            )
        if status >= 500:
            return TransientProviderError(
                f"SendGrid had a server error ({status}): {detail}",
                status=status,
                retry_after=_retry_after(exc.headers),
            )
        fix = _FIX.get(status, "fix what it says before sending again")
        return PermanentProviderError(
            f"SendGrid refused the request ({status}): {detail}; {fix}", status=status
        )

    def close(self) -> None:
        """Each request opens its own connection; nothing stays open but the log filter."""
        logging.getLogger(_CLIENT_LOGGER).removeFilter(self._redact)
