"""Fetching pages and feeds for `newsletter add`: polite, bounded, and off private networks.

A page someone pasted is not trusted: only http(s) is fetched, and the host is resolved
and every address it has checked before each request, the first and each redirect's, so
neither a link nor a redirect reaches this machine, the local network or a cloud metadata
address (refused unless `allow_local`). The request then goes to the address that was
checked (with the host name in `Host` and in TLS's SNI and certificate check), so a DNS
answer that changes between the check and the connection (DNS rebinding) cannot slip
through. Connections are not reused, so each TLS connection is verified for its host.
Redirects are followed by hand (at most `MAX_REDIRECTS`) so each hop is checked and
reported. Every fetch has a timeout and a deadline for the whole answer, and reads at
most `max_bytes` of the body: the metadata of a page sits in its `<head>`, so a gigantic
or endless page is cut, not refused. Bodies are decoded by the charset the server or the
page's `<meta charset>` declares.

The environment's proxy settings are not used: a proxy would fetch hosts we never checked.
"""

from __future__ import annotations

import codecs
import contextlib
import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urljoin, urlsplit

import httpx

from newsletter import __version__
from newsletter.content.links import Hop
from newsletter.errors import FetchError

USER_AGENT = f"newsletter/{__version__} (fetching a link an editor added to a newsletter issue)"
DEFAULT_TIMEOUT = 15.0
MAX_REDIRECTS = 5
PAGE_BYTES = 2_000_000
FEED_BYTES = 5_000_000
#: Pages fetched at once: a newsletter's ten links, without hammering any one site.
WORKERS = 4
HTML_TYPES = ("text/html", "application/xhtml+xml")
PAGE_ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5"
FEED_ACCEPT = (
    "application/atom+xml,application/rss+xml,application/xml;q=0.9,text/xml;q=0.9,*/*;q=0.5"
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
#: What browsers read these labels as (the WHATWG Encoding Standard).
_LABELS = {"iso-8859-1": "cp1252", "latin-1": "cp1252", "latin1": "cp1252", "us-ascii": "cp1252"}


@dataclass(frozen=True)
class Fetched:
    """One answer: where it ended, how it got there, and its body as text."""

    url: str
    final_url: str
    redirects: tuple[Hop, ...]
    content_type: str
    body: bytes
    text: str
    truncated: bool


def new_client(timeout: float = DEFAULT_TIMEOUT) -> httpx.Client:
    """One client for a run: connections kept alive, our User-Agent, no proxies."""
    return httpx.Client(
        headers={"User-Agent": USER_AGENT},
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=WORKERS * 2, max_keepalive_connections=0),
    )


def check_address(url: str, *, allow_local: bool = False) -> list[str]:
    """The addresses to connect to for `url`: refuse anything but http(s) to public ones.

    Raises `FetchError` saying why; every address the host resolves to must be public.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        scheme = parts.scheme or "a relative"
        raise FetchError(f"{scheme} links are not fetched; give an http(s) URL")
    host = parts.hostname
    if not host:
        raise FetchError("no host in the URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise FetchError("the port is not a number") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise FetchError(f"host not found: {host}") from None
    addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    if allow_local:
        return addresses
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None:
            address = mapped
        if not address.is_global or address.is_multicast:
            raise FetchError(
                f"{host} is a private, loopback or link-local address ({address}); "
                "refused (--allow-local fetches it)"
            )
    return addresses


def fetch(
    client: httpx.Client,
    url: str,
    *,
    allow_local: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = PAGE_BYTES,
    accept: str = PAGE_ACCEPT,
) -> Fetched:
    """GET `url`, following and checking redirects; raise `FetchError` with a one-line reason."""
    deadline = time.monotonic() + timeout
    hops: list[Hop] = []
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        addresses = check_address(current, allow_local=allow_local)
        try:
            with contextlib.closing(_open(client, current, addresses, accept)) as response:
                if response.is_redirect and "location" in response.headers:
                    current = urljoin(current, response.headers["location"])
                    hops.append(Hop(response.status_code, current))
                    continue
                if response.status_code >= 400:
                    raise FetchError(_status(response.status_code) + _after(hops))
                body, truncated = _read(response, max_bytes, deadline, timeout)
                ctype = response.headers.get("content-type", "")
                return Fetched(
                    url=url,
                    final_url=current,
                    redirects=tuple(hops),
                    content_type=ctype.split(";")[0].strip().lower(),
                    body=body,
                    text=decode(body, response.charset_encoding),
                    truncated=truncated,
                )
        except httpx.TimeoutException:
            raise FetchError(f"no answer within {timeout:g} s{_after(hops)}") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"{_reason(exc)}{_after(hops)}") from None
        except httpx.InvalidURL:
            raise FetchError(f"not a valid URL: {current}") from None
    raise FetchError(f"more than {MAX_REDIRECTS} redirects (a redirect loop?)")


def _open(client: httpx.Client, url: str, addresses: list[str], accept: str) -> httpx.Response:
    """GET `url` from the first of the checked `addresses` that takes the connection."""
    asked = httpx.URL(url)
    headers = {"Accept": accept, "Host": asked.netloc.decode("ascii")}
    sni = {"sni_hostname": asked.raw_host.decode("ascii")} if asked.scheme == "https" else {}
    for address in addresses[:-1]:
        request = client.build_request(
            "GET", asked.copy_with(host=address), headers=headers, extensions=sni
        )
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError:
            continue  # as a browser does: the host's next address
    request = client.build_request(
        "GET", asked.copy_with(host=addresses[-1]), headers=headers, extensions=sni
    )
    return client.send(request, stream=True)


def _read(
    response: httpx.Response, max_bytes: int, deadline: float, timeout: float
) -> tuple[bytes, bool]:
    """At most `max_bytes` of the body, within the deadline; True if there was more."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= max_bytes:
            return b"".join(chunks)[:max_bytes], True
        if time.monotonic() > deadline:
            raise FetchError(f"the page did not arrive within {timeout:g} s")
    return b"".join(chunks), False


def decode(body: bytes, declared: str | None) -> str:
    """Text from a body: a BOM, else the declared charset, else `<meta charset>`, else UTF-8."""
    if body.startswith(codecs.BOM_UTF8):
        return body[3:].decode("utf-8", errors="replace")
    match = _META_CHARSET.search(body[:4096])
    for label in (declared, match.group(1).decode("ascii") if match else None):
        if not label:
            continue
        name = _LABELS.get(label.strip().lower(), label.strip())
        try:
            return body.decode(codecs.lookup(name).name, errors="replace")
        except LookupError:
            continue
    return body.decode("utf-8", errors="replace")


def _after(hops: list[Hop]) -> str:
    return f" after redirects to {hops[-1].url}" if hops else ""


def _status(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _reason(exc: httpx.HTTPError) -> str:
    """An httpx error in words, without a traceback."""
    if isinstance(exc, httpx.ConnectError):
        text = str(exc).lower()
        if "refused" in text:
            return "connection refused"
        if "certificate" in text:
            return "TLS certificate not valid"
        return "could not connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server broke off the answer"
    if isinstance(exc, httpx.TooManyRedirects):
        return "too many redirects"
    return str(exc) or type(exc).__name__
