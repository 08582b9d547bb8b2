"""`newsletter sync sendgrid`: SendGrid's suppression lists into ours.

SendGrid keeps what its receivers told it after the send in five lists, read with
`GET /v3/suppression/<list>?start_time=&end_time=&limit=&offset=` (times in unix seconds,
both inclusive; at most 500 rows a page), and the unsubscribe group's in
`GET /v3/asm/groups/{id}/suppressions` (a plain list of addresses). Each maps to one kind
of event, applied by the rules of `lists.aftermath`:

    bounces          hard          suppressed at once
    invalid_emails   invalid       suppressed at once
    spam_reports     complaint     suppressed at once
    unsubscribes     unsubscribe   suppressed at once
    blocks           block         counted as a soft bounce (a receiver's passing refusal)

Each list is read from where the last sync ended (or `since`), up to the time the sync
started, page by page, over urllib; a 429 waits until `X-RateLimit-Reset` and asks again.
Every row is an event with its own key (list, address, created), so a second run adds
nothing.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from newsletter import __version__
from newsletter.config import Config, env_secret, redact, secrets
from newsletter.delivery.providers.sendgrid import sendgrid_account
from newsletter.errors import ConfigError, PermanentProviderError, TransientProviderError
from newsletter.lists.addresses import address_key
from newsletter.lists.aftermath import Aftermath, EventKind
from newsletter.lists.suppressions import SuppressionSink
from newsletter.storage.bounces import BounceState

LISTS: dict[str, EventKind] = {
    "bounces": "hard",
    "invalid_emails": "invalid",
    "spam_reports": "complaint",
    "unsubscribes": "unsubscribe",
    "blocks": "block",
}
PAGE = 500
TIMEOUT = 60.0
MAX_ATTEMPTS = 5
MAX_WAIT_S = 120.0
_FIX = {
    401: "the API key is wrong or revoked: check SENDGRID_API_KEY",
    403: "the key lacks the Suppressions permission (read access): add it in SendGrid, "
    "Settings > API Keys",
}


@dataclass
class SyncReport:
    since: dict[str, int] = field(default_factory=dict)
    until: int = 0
    fetched: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    suppressed: list[tuple[str, str]] = field(default_factory=list)
    requests: int = 0
    waited: float = 0.0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx comes back as an HTTPError: following it would send the key to another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Pager:
    """GETs against SendGrid over urllib, patient with 429s and 5xx.

    The stdlib, as the SendGrid provider sends: a few GETs need no client library, and this
    way the key goes only to the API host (no redirect is followed) over https (plain http
    only to this machine, the check `sendgrid_account` makes).
    """

    def __init__(self, config: Config, sleep: Callable[[float], None], report: SyncReport) -> None:
        if not env_secret(config.env, "SENDGRID_API_KEY"):
            raise ConfigError(
                "SENDGRID_API_KEY is not set; export a key with read access to Suppressions "
                "(SendGrid: Settings > API Keys)"
            )
        account = sendgrid_account(config)
        self.host = account.host
        self.settings = account.settings
        self._headers = {
            "Authorization": f"Bearer {account.api_key}",
            "Accept": "application/json",
            "User-Agent": f"newsletter/{__version__}",
        }
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._secrets = secrets(config)
        self._sleep = sleep
        self._report = report

    def get(self, path: list[str], query: dict[str, int] | None = None) -> Any:
        where = "/v3/" + "/".join(urllib.parse.quote(part, safe="") for part in path)
        url = self.host + where + (f"?{urllib.parse.urlencode(query)}" if query else "")
        for attempt in range(1, MAX_ATTEMPTS + 1):
            self._report.requests += 1
            request = urllib.request.Request(url, headers=self._headers, method="GET")
            try:
                with self._opener.open(request, timeout=TIMEOUT) as response:
                    return json.loads(response.read() or b"[]")
            except urllib.error.HTTPError as exc:
                with exc:
                    status, headers, body = exc.code, exc.headers, exc.read()
                # scrubbed before anything cuts it short, so no piece of a secret survives
                text = redact(body.decode("utf-8", "replace"), self._secrets)
                if 300 <= status < 400:
                    to = redact(str(headers.get("Location") or "elsewhere"), self._secrets)
                    raise PermanentProviderError(
                        f"SendGrid at {self.host} answered {status} to GET {where}, a redirect "
                        f"to {to}; it was not followed, since that would send the API key "
                        "there. Set SENDGRID_API_HOST to the API's own https:// address",
                        status=status,
                    ) from None
                if status != 429 and status < 500:
                    fix = _FIX.get(status, "check the account and try again")
                    raise PermanentProviderError(
                        f"SendGrid refused GET {where} ({status}): {text[:300]}; {fix}",
                        status=status,
                    ) from None
                wait = _wait(headers, attempt)
                if attempt == MAX_ATTEMPTS:
                    raise TransientProviderError(
                        f"SendGrid kept answering {status} to GET {where}; try the sync later "
                        "(it starts again where it stopped)",
                        status=status,
                        retry_after=wait,
                    ) from None
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                if attempt == MAX_ATTEMPTS:
                    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                    raise TransientProviderError(
                        f"GET {where} at {self.host} failed: "
                        f"{redact(str(reason), self._secrets)}; try again later"
                    ) from None
                wait = _wait(None, attempt)
            self._report.waited += wait
            self._sleep(wait)
        raise AssertionError("unreachable")


def _wait(headers: Any, attempt: int) -> float:
    """Seconds until X-RateLimit-Reset (epoch seconds) or Retry-After; else a backoff."""
    if headers is not None:
        for name, relative in (("Retry-After", True), ("X-RateLimit-Reset", False)):
            value = headers.get(name)
            if value:
                try:
                    seconds = float(value) if relative else float(value) - time.time()
                except ValueError:
                    continue
                return min(max(seconds, 0.0), MAX_WAIT_S)
    return min(2.0**attempt, MAX_WAIT_S)


def sync_sendgrid(
    config: Config,
    *,
    sink: SuppressionSink,
    state: BounceState,
    since: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> SyncReport:
    """Pull each suppression list since its last sync (or `since`) and apply every row."""
    report = SyncReport(until=int(clock()))
    pager = _Pager(config, sleep, report)
    rules = Aftermath(config, sink, state)
    for name, kind in LISTS.items():
        key = f"sendgrid:{name}"
        start = int(since.timestamp()) if since is not None else (state.last_sync(key) or 0)
        report.since[name] = start
        offset = 0
        while True:
            query = {"start_time": start, "end_time": report.until, "limit": PAGE}
            rows = pager.get(["suppression", name], {**query, "offset": offset})
            with state.transaction():
                for row in rows:
                    _apply(rules, report, name, kind, row)
                sink.flush()
            if len(rows) < PAGE:
                break
            offset += PAGE
        state.set_last_sync(key, report.until)
    group = pager.settings.asm_group_id
    if group is not None:
        emails = pager.get(["asm", "groups", str(group), "suppressions"])
        with state.transaction():
            for email in emails:
                row = {"email": email, "created": report.until}
                _apply(
                    rules, report, f"asm group {group}", "unsubscribe", row, dedupe_created=False
                )
            sink.flush()
    return report


def _created(value: object, default: int) -> int:
    """`created` as unix seconds (v3 answers an integer; take a date string too)."""
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.strip():
        try:
            return int(float(value))
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value.strip())
            except ValueError:
                return default
            return int(parsed.replace(tzinfo=parsed.tzinfo or UTC).timestamp())
    return default


def _apply(
    rules: Aftermath,
    report: SyncReport,
    name: str,
    kind: EventKind,
    row: dict[str, Any],
    *,
    dedupe_created: bool = True,
) -> None:
    email = str(row.get("email", "")).strip()
    if not email:
        return
    report.fetched[name] += 1
    created = _created(row.get("created"), report.until)
    detail = " ".join(str(row[k]) for k in ("status", "reason") if row.get(k))[:500]
    stamp = f":{created}" if dedupe_created else ""
    action = rules.apply(
        email,
        kind,
        issue=None,
        when=datetime.fromtimestamp(created, UTC),
        source=f"sendgrid {name}",
        detail=detail,
        dedupe=f"sendgrid:{name}:{address_key(email)}{stamp}",
    )
    report.actions[action] += 1
    if action == "suppressed":
        report.suppressed.append((email, kind))
