"""SendGrid's scheduled sends: one batch id for a send's requests, and its cancellation.

`POST /v3/mail/batch` answers 201 `{"batch_id": …}`; every mail send of the send then
carries that id with `send_at` (unix seconds, at most 72 hours ahead), and
`POST /v3/user/scheduled_sends {"batch_id", "status": "cancel"}` (201) makes SendGrid
discard those messages when their time comes. Cancelling a batch already cancelled or
paused is a 400, so then `GET /v3/user/scheduled_sends/{batch_id}` says what holds, and a
pause becomes a cancellation with `PATCH`. SendGrid promises a cancellation only up to
10 minutes before the time. (The shapes: twilio/sendgrid-oai, `tsg_mail_v3.json` and
`tsg_scheduled_sends_v3.json`.)

The mail send's rules hold here too: the key goes to the API host only (a redirect is
never followed), plain http only on this machine (`sendgrid_account` settles the host),
every request has a timeout, and secrets are scrubbed from every message.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

from newsletter import __version__
from newsletter.config import redact
from newsletter.delivery.providers.base import Scheduling
from newsletter.errors import (
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    UnknownOutcomeError,
)

if TYPE_CHECKING:
    from newsletter.delivery.providers.sendgrid import SendGridAccount

TIMEOUT = 30.0
BATCH_PATH = "/v3/mail/batch"
SCHEDULED_PATH = "/v3/user/scheduled_sends"
#: SendGrid takes a `send_at` at most this far ahead.
WINDOW = 72 * 3600.0
#: A cancellation later than this before the time may not hold (SendGrid's docs).
CANCEL_MARGIN = 10 * 60.0
_FIX = {
    401: "the API key is wrong or revoked: check SENDGRID_API_KEY",
    403: "the key lacks the permission for this (Mail Send, and Scheduled Sends to "
    "cancel): give it in SendGrid (Settings > API Keys)",
}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx comes back as an HTTPError: following it would send the key to another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _call(
    account: SendGridAccount,
    method: str,
    path: str,
    body: dict[str, str] | None,
    secrets: list[str],
) -> tuple[int, Any]:
    """One request: the status and the answer's JSON (None if it has none). Any status comes
    back; only a request that never got an answer raises."""
    request = urllib.request.Request(
        account.host + path,
        data=b"" if body is None else json.dumps(body).encode("ascii"),
        headers={
            "Authorization": f"Bearer {account.api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"newsletter/{__version__}",
        },
        method=method,
    )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, raw = exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise TransientProviderError(
            redact(f"cannot reach SendGrid at {account.host}: {exc.reason}", secrets)
        ) from None
    except (http.client.HTTPException, OSError) as exc:
        raise UnknownOutcomeError(
            f"SendGrid at {account.host} took the request but the connection was lost before "
            f"it answered ({type(exc).__name__})"
        ) from None
    try:
        data = json.loads(raw) if raw.strip() else None
    except ValueError:
        data = raw.decode("utf-8", "replace")
    return status, data


def _said(status: int, data: Any, secrets: list[str]) -> str:
    """What SendGrid said, shortened and scrubbed: its `errors[].message`, else the body."""
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        text = "; ".join(
            str(e.get("message", "")) for e in data["errors"][:3] if isinstance(e, dict)
        )
    else:
        text = " ".join(str(data or "").split())[:300]
    if 300 <= status < 400:
        text = "a redirect, not followed since it would send the API key elsewhere"
    return f"SendGrid answered {status}" + (f": {redact(text, secrets)}" if text else "")


def _error(status: int, data: Any, secrets: list[str]) -> ProviderError:
    said = _said(status, data, secrets)
    if status == 429 or status >= 500:
        return TransientProviderError(f"{said}; try again in a minute", status=status)
    fix = _FIX.get(status, "fix what it says and try again")
    return PermanentProviderError(f"{said}; {fix}", status=status)


def new_batch(account: SendGridAccount, secrets: list[str]) -> str:
    """A new batch id (POST /v3/mail/batch) for the requests of one scheduled send."""
    status, data = _call(account, "POST", BATCH_PATH, None, secrets)
    batch = data.get("batch_id") if isinstance(data, dict) else None
    if status in (200, 201) and isinstance(batch, str) and batch:
        return batch
    if status in (200, 201):
        raise PermanentProviderError(
            f"SendGrid answered {status} to a new batch id but gave none ({str(data)[:100]})"
        )
    raise _error(status, data, secrets)


def cancel(account: SendGridAccount, batch_id: str, secrets: list[str]) -> None:
    """Cancel every message under `batch_id`; one already cancelled is done, one paused is
    cancelled instead."""
    body = {"batch_id": batch_id, "status": "cancel"}
    status, data = _call(account, "POST", SCHEDULED_PATH, body, secrets)
    if status in (200, 201):
        return
    if status != 400:
        raise _error(status, data, secrets)
    # A 400 is also SendGrid's answer for a batch that already has a status: ask which.
    quoted = urllib.parse.quote(batch_id, safe="")
    seen, states = _call(account, "GET", f"{SCHEDULED_PATH}/{quoted}", None, secrets)
    found = (
        {str(s.get("status")) for s in states if isinstance(s, dict)}
        if seen == 200 and isinstance(states, list)
        else set()
    )
    if "cancel" in found:
        return
    if "pause" in found:
        changed, answer = _call(
            account, "PATCH", f"{SCHEDULED_PATH}/{quoted}", {"status": "cancel"}, secrets
        )
        if changed in (200, 201, 204):
            return
        raise _error(changed, answer, secrets)
    raise _error(status, data, secrets)


SCHEDULING: Scheduling[SendGridAccount] = Scheduling(
    window=WINDOW, cancel_margin=CANCEL_MARGIN, new_batch=new_batch, cancel=cancel
)
