"""What stands between the open internet and the store: limits on size, rate and origin.

A public form is found by bots within hours; these make a flood cost its sender more than
it costs us. Every refusal is a 4xx before anything is written.
"""

from __future__ import annotations

import email.parser
import email.policy
import secrets
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field

from starlette.requests import Request

from newsletter.errors import RequestRefused

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
JSON = "application/json"


@dataclass
class RateLimit:
    """At most `limit` hits per key in any `window` seconds (a sliding log per key).

    In memory, per process: the service runs as one process behind the proxy, and a restart
    forgetting the counts costs little. Old keys are dropped as they expire, so a flood of
    distinct keys cannot grow it without bound for longer than a window.
    """

    limit: int
    window: float
    _hits: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, key: str, now: float | None = None) -> bool:
        """Count a hit; False if the key is over its limit (the hit is then not counted)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._hits) > 10_000:
                self._hits = {
                    k: v for k, v in self._hits.items() if v and v[-1] > now - self.window
                }
            log = self._hits.setdefault(key, deque())
            while log and log[0] <= now - self.window:
                log.popleft()
            if len(log) >= self.limit:
                return False
            log.append(now)
            return True


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes, whatever Content-Length claims."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RequestRefused(413, "That request is too large.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestRefused(413, "That request is too large.")
    return bytes(body)


async def read_form(request: Request, limit: int) -> dict[str, str]:
    """A small HTML form (urlencoded, or multipart as RFC 8058 prefers): 415 for anything else."""
    kind = media_type(request)
    if kind not in (FORM, MULTIPART):
        raise RequestRefused(415, "This address takes a web form, nothing else.")
    body = await read_body(request, limit)
    if kind == FORM:
        try:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), strict_parsing=False)
        except UnicodeDecodeError:
            raise RequestRefused(400, "That form was not UTF-8 text.") from None
        return dict(pairs)
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise RequestRefused(400, "That form could not be read.")
    form: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            form[name] = payload.decode("utf-8", "replace").strip()
    return form


def client_ip(request: Request) -> str:
    """The reader's address; uvicorn puts the proxy's X-Forwarded-For here when trusted."""
    return request.client.host if request.client else "unknown"


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(18)
