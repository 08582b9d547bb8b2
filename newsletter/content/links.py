"""Link check: every http(s) link in an issue, each URL fetched once, several at a time.

    for result in check_links(issue):             # in file order
        print(result.where, result.url, result.outcome, result.message)

Which links: each article's `url` and image, and every link and image in the Markdown of
the intro, the section intros and the summaries (mailto and relative links are the
preflight's business, not fetched). A URL used in several places, or with different
`#fragments`, is fetched once; its result lists every place.

How: HEAD first, since it costs the site nothing. Many servers answer HEAD wrongly (405 or
501, but also 403, 404 or 500 for a page a browser opens fine), so any HEAD answer of 400
or more, except 429, is asked again with a GET whose body is never read; the GET decides.
Redirects are followed (HEAD stays HEAD) and reported with every hop. Requests run in a
bounded thread pool (8 at a time), each with its own timeout, and carry a User-Agent that
says what is asking.

Outcomes:

    ok          2xx, no redirect
    redirected  2xx after redirects: `final_url` is where it ended and `redirects` the hops;
                a permanent one (301/308) means the link could be updated
    broken      no answer (refused, reset, DNS, TLS, timeout), a redirect loop, or any other
                4xx/5xx: fix the link
    unknown     429 (rate limited, check again later), 401/403 (a login, a paywall, or a site
                that turns away automated checks: open it in a browser), 999 (LinkedIn's
                answer to bots), or a Cloudflare challenge. Worth a look, not proof of a
                broken link, so the CLI shows them as warnings.

With `record=PATH` (the CLI passes `<state_dir>/links.json`), each URL's outcome is kept
with the time it was checked, so `newsletter links ISSUE` can show what is dead without
fetching anything again.

Over 400 lines: fetching (HEAD, then GET; each redirect hop followed by hand) and sorting
the answers into the outcomes above are one idea, and the edge cases of each are the
other's input.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote, urldefrag, urlsplit, urlunsplit

from newsletter import __version__
from newsletter.content import markup
from newsletter.content.issue import Issue
from newsletter.content.yamldoc import Loc, field_name

Outcome = Literal["ok", "redirected", "broken", "unknown"]
Method = Literal["HEAD", "GET"]

DEFAULT_TIMEOUT = 10.0
DEFAULT_WORKERS = 8
USER_AGENT = f"newsletter/{__version__} (link check of a newsletter issue before it is sent)"
#: Answers that say "not telling a robot", not "this page is gone".
UNKNOWN_STATUSES = frozenset({401, 403, 429, 999})
PERMANENT_REDIRECTS = frozenset({301, 308})


@dataclass(frozen=True)
class Place:
    """Where a link appears: the issue file, the line and the field."""

    path: str
    line: int | None
    field: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.field}"


@dataclass(frozen=True)
class Hop:
    """One redirect: its status and where it pointed."""

    status: int
    url: str


@dataclass(frozen=True)
class Answer:
    """What fetching one URL found: the last status and URL, or why there was none."""

    status: int | None
    final_url: str
    redirects: tuple[Hop, ...] = ()
    error: str | None = None
    method: Method = "HEAD"
    retry_after: str | None = None
    challenge: bool = False  # a Cloudflare bot challenge


@dataclass(frozen=True)
class LinkResult:
    """One unique URL of the issue, every place it appears, and what checking it found."""

    url: str
    places: tuple[Place, ...]
    outcome: Outcome
    status: int | None  # the last HTTP status, None when nothing answered
    final_url: str | None  # where redirects ended (the URL itself without any)
    redirects: tuple[Hop, ...]
    error: str | None  # why it is broken or unknown, in words
    method: Method  # the request that decided: HEAD, or GET after a refused HEAD

    @property
    def ok(self) -> bool:
        return self.outcome in ("ok", "redirected")

    @property
    def level(self) -> Literal["error", "warning", "info"] | None:
        """How the CLI reports it: broken is an error, unknown a warning, a redirect a note."""
        return {"broken": "error", "unknown": "warning", "redirected": "info", "ok": None}[
            self.outcome
        ]

    @property
    def where(self) -> str:
        """The first place, as `file:line: field`."""
        return str(self.places[0])

    @property
    def permanent(self) -> bool:
        """Redirected by a 301/308 somewhere: the link itself could be updated."""
        return any(hop.status in PERMANENT_REDIRECTS for hop in self.redirects)

    @property
    def message(self) -> str:
        """One line for the CLI, e.g. `301 -> https://example.org/new (200 OK)`."""
        status = _status_text(self.status) if self.status is not None else None
        if self.outcome == "ok":
            return status or "ok"
        if self.outcome == "redirected":
            hops = (
                str(self.redirects[0].status)
                if len(self.redirects) == 1
                else f"{len(self.redirects)} redirects"
            )
            note = "; update the link" if self.permanent else ""
            return f"{hops} -> {self.final_url} ({status}){note}"
        text = f"{status} ({self.error})" if status and self.error else status or self.error
        if self.redirects and self.final_url and self.final_url != self.url:
            text = f"{text} after redirects to {self.final_url}"
        return text or self.outcome


def issue_links(issue: Issue) -> list[tuple[str, Place]]:
    """Every http(s) link and image of the issue with its place, in file order."""
    found: list[tuple[str, Loc]] = []

    def markdown(loc: Loc, text: str | None) -> None:
        if text:
            found.extend((href, loc) for href, _ in markup.links(text))
            found.extend((src, loc) for src, _ in markup.images(text))

    markdown(("intro",), issue.intro)
    for si, section in enumerate(issue.sections):
        markdown(("sections", si, "intro"), section.intro)
    for loc, article in issue.located_articles():
        found.append((article.url, (*loc, "url")))
        markdown((*loc, "summary"), article.summary)
        if article.image is not None:
            found.append((article.image.url, (*loc, "image", "url")))
    placed = []
    for url, loc in found:
        if _is_http(url):
            path, line = issue.where(loc)
            placed.append((url.strip(), Place(path, line, field_name(loc))))
    return sorted(placed, key=lambda item: item[1].line or 0)  # stable: file order


def check_links(
    issue: Issue,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    workers: int = DEFAULT_WORKERS,
    on_result: Callable[[LinkResult], None] | None = None,
    record: Path | None = None,
) -> list[LinkResult]:
    """Check every link of `issue` once; results in file order.

    `on_result` is called (in this thread) as each URL finishes, e.g. for a progress bar.
    With `record`, the outcomes are kept in that JSON file for `recorded()`.
    """
    results = check_urls(issue_links(issue), timeout=timeout, workers=workers, on_result=on_result)
    if record is not None:
        # the record is a convenience for `newsletter links`: a read-only checkout (a CI job)
        # still gets its check
        with contextlib.suppress(OSError):
            save_results(record, results)
    return results


# --- the last check, kept for `newsletter links` ----------------------------------------------

LINKS_FILE = "links.json"


@dataclass(frozen=True)
class Recorded:
    """What the last `check --links` found for a URL, and when."""

    outcome: Outcome
    message: str
    checked_at: str  # ISO 8601, UTC


def save_results(path: Path, results: Iterable[LinkResult]) -> None:
    """Merge `results` into the record at `path`, one rename so a reader never sees half."""
    known = _read_record(path)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    for result in results:
        known[urldefrag(result.url).url] = {
            "outcome": result.outcome,
            "message": result.message,
            "checked_at": now,
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def recorded(issue: Issue, path: Path) -> list[tuple[str, tuple[Place, ...], Recorded | None]]:
    """Each unique link of `issue`, its places, and its last recorded check (None: never)."""
    known = _read_record(path)
    places: dict[str, list[Place]] = {}
    for url, place in issue_links(issue):
        places.setdefault(urldefrag(url).url, []).append(place)
    found = []
    for url, where in places.items():
        entry = known.get(url)
        last = None
        if isinstance(entry, dict) and entry.get("outcome") in (
            "ok",
            "redirected",
            "broken",
            "unknown",
        ):
            last = Recorded(
                entry["outcome"], str(entry.get("message", "")), str(entry.get("checked_at", ""))
            )
        found.append((url, tuple(where), last))
    return found


def _read_record(path: Path) -> dict[str, Any]:
    """The record, or nothing if there is none or it is unreadable (a check rewrites it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_urls(
    links: Iterable[tuple[str, Place]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    workers: int = DEFAULT_WORKERS,
    on_result: Callable[[LinkResult], None] | None = None,
) -> list[LinkResult]:
    """Check (url, place) pairs: each URL (without its #fragment) fetched once."""
    places: dict[str, list[Place]] = {}
    first: dict[str, str] = {}
    for url, place in links:
        key = urldefrag(url).url
        places.setdefault(key, []).append(place)
        first.setdefault(key, url)
    if not places:
        return []
    results: dict[str, LinkResult] = {}
    pool = ThreadPoolExecutor(
        max_workers=max(1, min(workers, len(places))), thread_name_prefix="linkcheck"
    )
    try:
        futures: dict[Future[Answer], str] = {
            pool.submit(fetch, key, timeout=timeout): key for key in places
        }
        for future in as_completed(futures):
            key = futures[future]
            result = _result(first[key], tuple(places[key]), future.result())
            results[key] = result
            if on_result is not None:
                on_result(result)
    finally:
        # on Ctrl-C: drop what has not started, wait (at most `timeout`) for what has
        pool.shutdown(wait=True, cancel_futures=True)
    return [results[key] for key in places]


def fetch(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> Answer:
    """HEAD `url`, then GET it if the HEAD answer was 400 or more (except 429)."""
    head = _request(url, "HEAD", timeout)
    if head.status is not None and head.status >= 400 and head.status != 429:
        return _request(url, "GET", timeout)
    return head


def classify(answer: Answer) -> Outcome:
    status = answer.status
    if status is None:
        return "broken"
    if answer.challenge or status in UNKNOWN_STATUSES:
        return "unknown"
    if 200 <= status < 300:
        return "redirected" if answer.redirects else "ok"
    return "broken"


def _result(url: str, places: tuple[Place, ...], answer: Answer) -> LinkResult:
    outcome = classify(answer)
    return LinkResult(
        url=url,
        places=places,
        outcome=outcome,
        status=answer.status,
        final_url=answer.final_url,
        redirects=answer.redirects,
        error=answer.error or _why(answer, outcome),
        method=answer.method,
    )


def _why(answer: Answer, outcome: Outcome) -> str | None:
    status = answer.status
    if outcome != "unknown" or status is None:
        return None
    if status == 429:
        later = f"; Retry-After: {answer.retry_after}" if answer.retry_after else ""
        return f"rate limited, check again later{later}"

    if answer.challenge:
        return "the site shows a bot challenge: open it in a browser"
    return "a login, a paywall or a site refusing automated checks: open it in a browser"


# --- one request --------------------------------------------------------------------------------


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects as urllib does, but keep HEAD a HEAD and record every hop."""

    def __init__(self) -> None:
        self.hops: list[Hop] = []

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        self.hops.append(Hop(code, new.full_url))
        return urllib.request.Request(
            new.full_url,
            headers=dict(new.header_items()),
            origin_req_host=req.origin_req_host,
            unverifiable=True,
            method=req.get_method(),
        )


def _request(url: str, method: Method, timeout: float) -> Answer:
    redirects = _Redirects()
    opener = urllib.request.build_opener(redirects)
    request = urllib.request.Request(
        _ascii(url),
        method=method,
        headers={"User-Agent": USER_AGENT, "Accept": "text/html,*/*;q=0.8"},
    )

    def answer(
        status: int | None, final: str, error: str | None = None, headers: Any = None
    ) -> Answer:
        return Answer(
            status=status,
            final_url=final,
            redirects=tuple(redirects.hops),
            error=error,
            method=method,
            retry_after=headers.get("Retry-After") if headers is not None else None,
            challenge=headers is not None and headers.get("cf-mitigated") == "challenge",
        )

    def last() -> str:
        return redirects.hops[-1].url if redirects.hops else url

    try:
        # the body is never read: for a GET, closing the response drops the connection
        with opener.open(request, timeout=timeout) as response:
            return answer(response.status, response.url, headers=response.headers)
    except urllib.error.HTTPError as exc:
        try:
            if 300 <= exc.code < 400:
                error = (
                    "too many redirects (a redirect loop?)"
                    if "infinite loop" in str(exc.reason)
                    else f"redirect refused: {exc.reason}"
                )
                return answer(exc.code, exc.url or last(), error, exc.headers)
            return answer(exc.code, exc.url or last(), headers=exc.headers)
        finally:
            exc.close()
    except urllib.error.URLError as exc:
        return answer(None, last(), _reason(exc.reason, timeout))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return answer(None, last(), _reason(exc, timeout))


def _reason(reason: object, timeout: float) -> str:
    """An exception from the network, in words."""
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    if isinstance(reason, socket.gaierror):
        return "host not found"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate: {reason.verify_message}"
    if isinstance(reason, ssl.SSLError):
        return f"TLS: {reason.reason or reason}"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(reason, http.client.HTTPException):
        return f"not an HTTP answer ({type(reason).__name__})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _is_http(url: str) -> bool:
    parts = urlsplit(url.strip())
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _ascii(url: str) -> str:
    """Percent-encode non-ASCII in the path and query; http.client sends bytes, not IRIs."""
    if url.isascii():
        return url
    parts = urlsplit(url)
    safe = "/%:@!$&'()*+,;=~-._?"
    return urlunsplit(
        (
            parts.scheme,
            parts.netloc,
            quote(parts.path, safe=safe),
            quote(parts.query, safe=safe),
            quote(parts.fragment, safe=safe),
        )
    )
