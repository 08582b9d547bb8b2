"""A server on 127.0.0.1 that answers `POST /v3/mail/send` the way SendGrid's v3 API does.

    with SendGridServer("SG.test-key") as server:
        SendGridAPIClient("SG.test-key", host=server.url).client.mail.send.post(request_body=body)
        assert [d.email for d in server.deliveries()] == ["ada@example.com"]

What it checks, in this order, for every request:

    path and method       404 / 405, SendGrid's error body
    Authorization         `Bearer <api_key>` or 401
    size                  a body over `max_body_bytes` (30 MB) -> 413
    JSON schema           the request body schema of SendGrid's own OpenAPI spec
                          (twilio/sendgrid-oai `tsg_mail_v3.json`), with the spec's known bug fixed:
                          top-level `custom_args` is an object of strings, not a string
    live-API rules        what the live API refuses and the spec does not say: see `live_problems`

A refusal is a 400 whose body lists every problem as `{"message", "field", "help"}`.
An accepted request gets 202, an empty body and a unique `X-Message-Id`, and is recorded in
`accepted`; `deliveries()` expands those into one `Delivered` per recipient, personalised as
SendGrid would. With `mail_settings.sandbox_mode.enable` a valid request gets 200 and is recorded
in `sandboxed` only.

Faults: `inject(*faults)` queues faults for the next requests, one per request, in order;
`random_faults(seed, rate, kinds)` then draws one for a request with probability `rate`. Every
request that reaches the server (even one to a wrong path) consumes a queued fault or a draw.

    status(code, message=, retry_after=, headers=)  answer `code` with SendGrid's error body after
                                 reading the request; nothing is recorded. 429 also carries
                                 X-RateLimit-Limit/Remaining/Reset (and Retry-After if given).
    drop_before_read()           reset the connection (RST) without reading the request: nothing
                                 recorded. The client sees ConnectionResetError from
                                 getresponse() (urllib lets it through unwrapped); a body too large
                                 for the socket buffers may see URLError(BrokenPipe/Reset) instead.
    drop_after_accept()          read and process the request as usual (a valid one is recorded
                                 as accepted), then close without answering: the unknown outcome.
                                 The client sees http.client.RemoteDisconnected.
    redirect(location, code=302) read the request, answer `code` with a Location header and
                                 no body; nothing recorded.
    slow(seconds)                read the request, sleep, then process and answer as usual. A
                                 client that timed out meanwhile is still recorded as accepted.
    close_after_answer()         process and answer as usual, then close the connection without
                                 having said `Connection: close`: a keep-alive timeout that ran
                                 out just after the answer. A client must notice before it
                                 writes its next request on that connection.

Connections are kept open between requests (HTTP/1.1 keep-alive, closed after 10 s idle);
`connections_opened` counts the connections clients have made.

Suppression lists (GET, read-only): `add_suppressions(name, *rows)` stores rows for
/v3/suppression/{bounces,blocks,invalid_emails,spam_reports,unsubscribes} (each row a dict
with `email` and `created`, unix seconds, as SendGrid answers), served newest first and
filtered by `start_time`/`end_time` (inclusive), paged by `limit` (at most 500) and `offset`;
`add_group_suppressions(group_id, *emails)` for /v3/asm/groups/{id}/suppressions, which
answers a plain list of addresses. `suppression_requests` lists every such path asked for.

Scheduled sends (twilio/sendgrid-oai `tsg_mail_v3.json` and `tsg_scheduled_sends_v3.json`):
`POST /v3/mail/batch` answers 201 `{"batch_id"}` and `GET /v3/mail/batch/{id}` 200 (or 400
"invalid batch id"); a mail send whose `batch_id` the server never made is a 400.
`POST /v3/user/scheduled_sends {"batch_id", "status": "pause"|"cancel"}` answers 201 with
the same object, and 400 if the batch already has a status (as SendGrid documents);
`GET /v3/user/scheduled_sends/{id}` lists it, `PATCH` changes it (204). A cancel later than
10 minutes before a `send_at` of the batch is refused (SendGrid promises none then).
`deliveries()` leaves out the messages of a cancelled batch (SendGrid discards them at their
time); `accepted` keeps every request; `scheduled_sends` holds each batch's status.

For a benchmark, `validate=False` skips the checks (the key is still checked) and `record=False`
keeps nothing but counters (`requests`, `accepted_count`, `recipients`); with both, a body is
not even parsed unless `count_recipients=True` asks for `recipients`.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import hmac
import json
import os
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import email_validator
from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from tests.servers.faults import FaultPlan

TEST_API_KEY = "SG.test-key-for-the-loopback-server"
SPEC_ENV = "NEWSLETTER_SENDGRID_SPEC"
DEFAULT_SPEC = Path(__file__).resolve().parents[2].parent / "shared" / "specs" / "tsg_mail_v3.json"
SEND_PATH = "/v3/mail/send"
BATCH_PATH = "/v3/mail/batch"
SCHEDULED_PATH = "/v3/user/scheduled_sends"
CANCEL_MARGIN = 10 * 60
SUPPRESSION_LISTS = ("bounces", "blocks", "invalid_emails", "spam_reports", "unsubscribes")
SUPPRESSION_PAGE_MAX = 500
_GROUP_PATH = re.compile(r"^/v3/asm/groups/(\d+)/suppressions$")

MAX_BODY_BYTES = 30_000_000  # SendGrid: "less than 30MB"; the stricter reading
MAX_RECIPIENTS = 1000
MAX_ARGS_BYTES = 10_000
MAX_SEND_AT_AHEAD = 72 * 3600
MAX_ERRORS = 100
# Headers SendGrid does not let a request set (the spec's description of `headers`).
RESERVED_HEADERS = frozenset(
    {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type", "to", "from", "cc", "bcc"}
    | {"content-transfer-encoding", "subject", "reply-to"}
)
DEFAULT_MESSAGES = {
    400: "Bad Request",
    401: "authorization required",
    403: "access forbidden",
    404: "not found",
    405: "method not allowed",
    413: "content too large",
    429: "too many requests",
    500: "internal server error",
    503: "service unavailable",
}


# --- faults -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One misbehaviour for one request; build them with the functions below."""

    kind: Literal[
        "status",
        "drop_before_read",
        "drop_after_accept",
        "slow",
        "slow_answer",
        "redirect",
        "close_after_answer",
    ]
    code: int = 0
    message: str | None = None
    retry_after: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    location: str = ""
    field: str | None = None
    body: bytes | None = None

    @property
    def label(self) -> str:
        """The key in `SendGridServer.faults_injected`: `status_429`, `drop_before_read`, ..."""
        return f"status_{self.code}" if self.kind == "status" else self.kind


def status(
    code: int,
    *,
    message: str | None = None,
    retry_after: int | None = None,
    headers: Mapping[str, str] | None = None,
    field: str | None = None,
    body: bytes | None = None,
) -> Fault:
    """Answer `code` with SendGrid's error body (and rate-limit headers for 429); `field`
    names the part of the request it is about, e.g. `personalizations.3.to.0.email`; `body`
    is sent as is instead (a proxy's text page, or a server echoing what it was sent)."""
    return Fault(
        "status",
        code=code,
        message=message,
        field=field,
        body=body,
        retry_after=retry_after,
        headers=tuple((headers or {}).items()),
    )


def drop_before_read() -> Fault:
    """Reset the connection without reading the request: nothing is delivered."""
    return Fault("drop_before_read")


def drop_after_accept() -> Fault:
    """Process the request (record it if valid), then close without answering."""
    return Fault("drop_after_accept")


def slow(seconds: float) -> Fault:
    """Sleep `seconds` after reading the request, then process and answer it as usual."""
    return Fault("slow", seconds=seconds)


def slow_answer(seconds: float) -> Fault:
    """Process the request (record it if valid), then sleep `seconds` before answering: a
    client killed meanwhile never learns that its batch was taken."""
    return Fault("slow_answer", seconds=seconds)


def close_after_answer() -> Fault:
    """Answer as usual, then close the connection, as a keep-alive timeout would."""
    return Fault("close_after_answer")


def redirect(location: str, code: int = 302) -> Fault:
    """Answer `code` with `Location: location` after reading the request; nothing recorded:
    an API host moved, or a proxy in front of it, sending the client elsewhere."""
    return Fault("redirect", code=code, location=location)


DEFAULT_FAULT_KINDS: tuple[Fault, ...] = (
    status(429, retry_after=0),
    status(500),
    status(503),
    drop_before_read(),
    drop_after_accept(),
)


# --- what the server records --------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """A request the server accepted: the parsed body, the X-Message-Id it answered, the
    request headers (Authorization redacted). In `sandboxed`, `message_id` is "" (none sent)."""

    body: dict[str, Any]
    message_id: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Delivered:
    """One recipient of one personalization, with the message SendGrid would send them."""

    email: str
    name: str | None
    kind: Literal["to", "cc", "bcc"]
    from_email: str
    subject: str
    contents: dict[str, str]  # MIME type -> value, substitutions applied
    headers: dict[str, str]  # personalization headers over the top-level ones
    custom_args: dict[str, str]  # personalization custom_args over the top-level ones
    categories: tuple[str, ...]
    message_id: str


def expand(accepted: Accepted) -> Iterator[Delivered]:
    """The deliveries of one accepted request: every to, cc and bcc of every personalization."""
    body = accepted.body
    contents = {c["type"]: c["value"] for c in body.get("content", [])}
    for p in body["personalizations"]:
        substitute = _substituter(p.get("substitutions", {}))
        subject = substitute(p.get("subject", body.get("subject", "")))
        personal = {kind: substitute(value) for kind, value in contents.items()}
        headers = {**body.get("headers", {}), **p.get("headers", {})}
        custom_args = {**body.get("custom_args", {}), **p.get("custom_args", {})}
        sender = p.get("from", body["from"])["email"]
        for kind in ("to", "cc", "bcc"):
            for recipient in p.get(kind, []):
                yield Delivered(
                    email=recipient["email"],
                    name=recipient.get("name"),
                    kind=kind,
                    from_email=sender,
                    subject=subject,
                    contents=personal,
                    headers=headers,
                    custom_args=custom_args,
                    categories=tuple(body.get("categories", ())),
                    message_id=accepted.message_id,
                )


def _substituter(substitutions: Mapping[str, str]) -> Callable[[str], str]:
    """Replace every tag in one pass, longest first, so a value is never substituted again."""
    if not substitutions:
        return lambda text: text
    tags = sorted(substitutions, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(tag) for tag in tags))
    return lambda text: pattern.sub(lambda m: substitutions[m.group(0)], text)


# --- checking a request -------------------------------------------------------------------------


def spec_path() -> Path:
    """Where SendGrid's OpenAPI spec is: $NEWSLETTER_SENDGRID_SPEC, else ../shared/specs/."""
    path = Path(os.environ.get(SPEC_ENV) or DEFAULT_SPEC)
    if not path.is_file():
        raise FileNotFoundError(
            f"SendGrid's OpenAPI spec is not at {path}: set {SPEC_ENV} to the path of "
            "tsg_mail_v3.json, or check out shared/specs/ beside the repository "
            "(the spec is not copied into the repository on purpose)."
        )
    return path


@cache
def schema_validator(path: Path) -> Draft202012Validator:
    """A validator for the request body of POST /v3/mail/send, `$ref`s resolved in the spec."""
    spec = json.loads(path.read_text(encoding="utf-8"))
    media = spec["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"]
    # The spec types top-level custom_args as a string; the live API takes an object of strings.
    media["schema"]["properties"]["custom_args"] = {
        "type": "object",
        "additionalProperties": {"type": "string"},
    }
    uri = "urn:sendgrid:tsg_mail_v3"
    registry = Registry().with_resource(uri, DRAFT202012.create_resource(spec))
    pointer = "/components/requestBodies/PostMailSend/content/application~1json/schema"
    formats = FormatChecker(formats=())
    formats.checks("email", raises=email_validator.EmailNotValidError)(_is_email)
    return Draft202012Validator(
        {"$ref": f"{uri}#{pointer}"}, registry=registry, format_checker=formats
    )


def _is_email(value: object) -> bool:
    if isinstance(value, str):
        email_validator.validate_email(value, check_deliverability=False, test_environment=True)
    return True


def problem(message: str, field: str | None = None) -> dict[str, Any]:
    """One entry of SendGrid's error body."""
    return {"message": message, "field": field, "help": None}


def error_body(*problems: dict[str, Any]) -> bytes:
    return json.dumps({"errors": list(problems)[:MAX_ERRORS]}).encode()


def schema_problems(validator: Draft202012Validator, body: object) -> list[dict[str, Any]]:
    return [_schema_problem(e) for e in validator.iter_errors(body)]


def _schema_problem(error: ValidationError) -> dict[str, Any]:
    path = [str(part) for part in error.absolute_path]
    if error.validator == "required":
        instance = error.instance if isinstance(error.instance, dict) else {}
        names = [n for n in error.validator_value if n not in instance]
        name = next((n for n in names if error.message.startswith(repr(n))), names[0])
        missing = ".".join([*path, name])
        return problem(f"The {missing} field is required.", missing)
    where = ".".join(path) or None
    detail = error.message if len(error.message) <= 200 else error.message[:200] + "…"
    return problem(f"{where or 'The request body'}: {detail}", where)


def live_problems(body: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """What the live API refuses in a schema-valid body and the spec does not say.

    Every personalization needs a `to`; at most 1000 recipients (to + cc + bcc) in all; no address
    twice in one request (case-insensitive); `subject` (top level or in every personalization) and
    `content` unless `template_id`; text/plain first, then text/html, each at most once;
    substitutions and the merged custom_args of each personalization at most 10,000 bytes (keys
    plus values, UTF-8); every address (recipients, from, reply_to) is ASCII (an
    internationalised domain in its xn-- form); a recipient name with `,` or `;` is a quoted
    string (the live API accepts a bare one with 202, then drops the mail: sendgrid/docs#2005);
    custom_args and header
    values are strings; no reserved header; not both reply_to and reply_to_list; send_at at
    most 72 hours ahead; attachments are base64.
    """
    problems: list[dict[str, Any]] = []
    personalizations = body["personalizations"]
    templated = "template_id" in body
    if not personalizations:
        message = "The personalizations array needs at least one personalization."
        problems.append(problem(message, "personalizations"))
    seen: dict[str, str] = {}
    recipients = 0
    for i, p in enumerate(personalizations):
        here = f"personalizations.{i}"
        if not p["to"]:
            problems.append(problem("The to array needs at least one recipient.", f"{here}.to"))
        for kind in ("to", "cc", "bcc"):
            for j, recipient in enumerate(p.get(kind, [])):
                recipients += 1
                where, address = f"{here}.{kind}.{j}.email", recipient["email"]
                if not address.isascii():
                    problems.append(problem("Does not contain a valid address.", where))
                name = recipient.get("name")
                if name and _LIST_SEPARATORS.search(name) and not _QUOTED.fullmatch(name):
                    message = (
                        "A name with a comma or semicolon must be in double quotes: the live "
                        "API answers 202 and then drops the mail."
                    )
                    problems.append(problem(message, f"{here}.{kind}.{j}.name"))
                first = seen.setdefault(address.casefold(), where)
                if first != where:
                    message = f"{address} appears twice in one request (first at {first})."
                    problems.append(problem(message, where))
        if not templated and "subject" not in body and "subject" not in p:
            message = "The subject is required unless a template_id is given (or set it here)."
            problems.append(problem(message, f"{here}.subject"))
        if _size(p.get("substitutions", {})) > MAX_ARGS_BYTES:
            message = f"The substitutions may not exceed {MAX_ARGS_BYTES} bytes."
            problems.append(problem(message, f"{here}.substitutions"))
        custom_args = {**body.get("custom_args", {}), **p.get("custom_args", {})}
        if _size(custom_args) > MAX_ARGS_BYTES:
            message = f"The custom_args may not exceed {MAX_ARGS_BYTES} bytes in all."
            problems.append(problem(message, f"{here}.custom_args"))
        problems += _string_values(p.get("custom_args", {}), f"{here}.custom_args")
        problems += _header_problems(p.get("headers", {}), f"{here}.headers")
        problems += _send_at_problems(p.get("send_at"), f"{here}.send_at", now)
    if recipients > MAX_RECIPIENTS:
        message = f"{recipients} recipients in one request; at most {MAX_RECIPIENTS} in all."
        problems.append(problem(message, "personalizations"))
    for name in ("from", "reply_to"):
        if name in body and not body[name]["email"].isascii():
            problems.append(problem("Does not contain a valid address.", f"{name}.email"))
    problems += _content_problems(body.get("content"), templated)
    problems += _header_problems(body.get("headers", {}), "headers")
    problems += _send_at_problems(body.get("send_at"), "send_at", now)
    if "reply_to" in body and "reply_to_list" in body:
        problems.append(problem("Give reply_to or reply_to_list, not both.", "reply_to_list"))
    for i, attachment in enumerate(body.get("attachments", [])):
        try:
            base64.b64decode(attachment["content"], validate=True)
        except binascii.Error:
            message = "The attachment content must be base64 encoded."
            problems.append(problem(message, f"attachments.{i}.content"))
    return problems


# SendGrid builds the To header from `name` as is: a bare `,` or `;` splits it into addresses.
_LIST_SEPARATORS = re.compile("[,;]")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def _size(mapping: Mapping[str, Any]) -> int:
    return sum(len(k.encode()) + len(str(v).encode()) for k, v in mapping.items())


def _string_values(mapping: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    return [
        problem(f"Invalid type. Expected: string, given: {type(v).__name__}.", f"{where}.{k}")
        for k, v in mapping.items()
        if not isinstance(v, str)
    ]


def _header_problems(headers: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    problems = _string_values(headers, where)
    for name in headers:
        if name.lower() in RESERVED_HEADERS:
            problems.append(problem(f"The {name} header may not be set.", f"{where}.{name}"))
    return problems


def _send_at_problems(send_at: int | None, where: str, now: float) -> list[dict[str, Any]]:
    if send_at is not None and send_at > now + MAX_SEND_AT_AHEAD:
        return [problem("send_at may not be more than 72 hours ahead.", where)]
    return []


def _content_problems(
    content: list[dict[str, str]] | None, templated: bool
) -> list[dict[str, Any]]:
    if not content:
        if templated:
            return []
        message = "The content is required unless a template_id is given: at least one block."
        return [problem(message, "content")]
    types = [block["type"] for block in content]
    problems = []
    for kind in ("text/plain", "text/html"):
        if types.count(kind) > 1:
            problems.append(problem(f"{kind} may only be given once.", "content"))
    expected = [kind for kind in ("text/plain", "text/html") if kind in types]
    if types[: len(expected)] != expected:
        message = "text/plain must come first, then text/html, then any other type."
        problems.append(problem(message, "content"))
    return problems


def recipients_in(body: Mapping[str, Any]) -> int:
    return sum(
        len(p.get(kind, []))
        for p in body.get("personalizations", [])
        for kind in ("to", "cc", "bcc")
        if isinstance(p, dict)
    )


# --- the server ---------------------------------------------------------------------------------


@dataclass
class _Response:
    code: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class SendGridServer:
    """SendGrid's v3 mail send on 127.0.0.1, in a thread; a context manager (see the module doc).

    `validate`: check bodies against the spec and the live rules (needs the spec file).
    `record`: keep accepted bodies (`accepted`, `sandboxed`, `deliveries()`); counters always.
    `count_recipients`: with `validate=False`, parse bodies just to count `recipients`.
    """

    def __init__(
        self,
        api_key: str,
        *,
        validate: bool = True,
        record: bool = True,
        count_recipients: bool = False,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.api_key = api_key
        self.validate = validate
        self.record = record
        self.count_recipients = count_recipients
        self.max_body_bytes = max_body_bytes
        self._validator = schema_validator(spec_path()) if validate else None
        self._lock = threading.Lock()
        self._accepted: list[Accepted] = []
        self._sandboxed: list[Accepted] = []
        self._faults: FaultPlan[Fault] = FaultPlan()
        self._requests = 0
        self._accepted_count = 0
        self._recipients = 0
        self._handling = 0
        self._peak_handling = 0
        self._connections: set[socket.socket] = set()
        #: Set by close(): a slow fault's sleep ends at once, so closing never waits out
        #: a delay no client is waiting for any more.
        self._closing = threading.Event()
        self._connections_opened = 0
        self._suppressions: dict[str, list[dict[str, Any]]] = {n: [] for n in SUPPRESSION_LISTS}
        self._group_suppressions: dict[int, list[str]] = {}
        self.suppression_requests: list[str] = []
        #: Batch ids made by POST /v3/mail/batch -> "pause" / "cancel", or None (no status).
        self.scheduled_sends: dict[str, str | None] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0  # set by start()

    # lifecycle

    def start(self) -> SendGridServer:
        self._httpd = _HTTPServer(self)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sendgrid-server-{self.port}",
        )
        self._closing.clear()
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, wake idle keep-alive connections, and join every thread."""
        if self._httpd is None:
            return
        self._closing.set()
        self._httpd.shutdown()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        assert self._thread is not None
        self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> SendGridServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The `host` to give SendGridAPIClient, e.g. http://127.0.0.1:54321."""
        return f"http://127.0.0.1:{self.port}"

    # faults

    def inject(self, *faults: Fault) -> None:
        """Queue faults for the next requests, one each, in order."""
        self._faults.inject(*faults)

    def random_faults(
        self, seed: int, rate: float, kinds: Sequence[Fault] = DEFAULT_FAULT_KINDS
    ) -> None:
        """After the queue is empty, give each request a fault drawn from `kinds` with
        probability `rate`, reproducibly for `seed` (rate 0 turns it off)."""
        self._faults.random(seed, rate, kinds)

    # suppression lists

    def add_suppressions(self, name: str, *rows: Mapping[str, Any]) -> None:
        """Store rows (`email`, `created` and the list's other fields) in a suppression list."""
        with self._lock:
            self._suppressions[name].extend(dict(row) for row in rows)

    def add_group_suppressions(self, group_id: int, *emails: str) -> None:
        with self._lock:
            self._group_suppressions.setdefault(group_id, []).extend(emails)

    # what happened (snapshots, safe to read while requests run)

    @property
    def accepted(self) -> list[Accepted]:
        with self._lock:
            return list(self._accepted)

    @property
    def sandboxed(self) -> list[Accepted]:
        with self._lock:
            return list(self._sandboxed)

    @property
    def requests(self) -> int:
        """Every request that reached the server, faulted or not."""
        return self._requests

    @property
    def accepted_count(self) -> int:
        """Requests answered (or, with drop_after_accept, about to be answered) 202."""
        return self._accepted_count

    @property
    def recipients(self) -> int:
        """to + cc + bcc over the accepted requests (0 with validate=False unless counting)."""
        return self._recipients

    @property
    def connections_opened(self) -> int:
        """Connections clients have opened to the server so far."""
        return self._connections_opened

    @property
    def peak_concurrent_requests(self) -> int:
        """The most requests the server was handling at one moment (read to answered)."""
        return self._peak_handling

    @property
    def faults_injected(self) -> collections.Counter[str]:
        """How many of each fault were applied, by `Fault.label`."""
        return self._faults.injected

    def deliveries(self) -> list[Delivered]:
        """One `Delivered` per recipient of every accepted request, in order; those of a
        cancelled batch are left out, as SendGrid discards them."""
        with self._lock:
            cancelled = {b for b, state in self.scheduled_sends.items() if state == "cancel"}
        return [
            d
            for accepted in self.accepted
            if accepted.body.get("batch_id") not in cancelled
            for d in expand(accepted)
        ]

    def delivered_to(self) -> collections.Counter[str]:
        """Who gets mail: each `to` address of `deliveries()`, with how many messages."""
        return collections.Counter(d.email for d in self.deliveries() if d.kind == "to")

    # called by the request handler threads

    def _next_fault(self) -> Fault | None:
        with self._lock:
            self._requests += 1
        return self._faults.draw()

    @contextlib.contextmanager
    def _handling_one(self) -> Iterator[None]:
        with self._lock:
            self._handling += 1
            self._peak_handling = max(self._peak_handling, self._handling)
        try:
            yield
        finally:
            with self._lock:
                self._handling -= 1

    def _track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
                self._connections_opened += 1
            else:
                self._connections.discard(connection)

    def _answer(self, method: str, path: str, headers: Message, raw: bytes | None) -> _Response:
        """The response to one request; records it if accepted."""
        if method == "GET" and path.startswith(("/v3/suppression/", "/v3/asm/groups/")):
            return self._suppression_answer(path, headers)
        if path.startswith((BATCH_PATH, SCHEDULED_PATH)):
            return self._schedule_answer(method, path, headers, raw)
        if path.partition("?")[0] != SEND_PATH:
            return _error(404)
        if method != "POST":
            return _error(405)
        authorization = headers.get("Authorization", "")
        if not authorization:
            return _error(401)
        if not hmac.compare_digest(authorization.encode(), f"Bearer {self.api_key}".encode()):
            return _error(401, "The provided authorization grant is invalid, expired, or revoked")
        if raw is None:
            return _error(413)
        if self._validator is None and not (self.record or self.count_recipients):
            return self._accept(None, 0, headers)
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400)
        if self._validator is not None:
            problems = schema_problems(self._validator, body) or live_problems(body, time.time())
            batch = body.get("batch_id") if isinstance(body, dict) else None
            if not problems and batch is not None:
                with self._lock:
                    if batch not in self.scheduled_sends:
                        problems = [problem("invalid batch id", "batch_id")]
            if problems:
                return _Response(400, error_body(*problems))
        recipients = recipients_in(body) if isinstance(body, dict) else 0
        if _is_sandbox(body):
            if self.record:
                with self._lock:
                    self._sandboxed.append(Accepted(body, "", _redacted(headers)))
            return _Response(200)
        return self._accept(body, recipients, headers)

    def _suppression_answer(self, path: str, headers: Message) -> _Response:
        """A page of a suppression list, as SendGrid's GET endpoints answer."""
        authorization = headers.get("Authorization", "").encode()
        if not hmac.compare_digest(authorization, f"Bearer {self.api_key}".encode()):
            return _error(401)
        route, _, query = path.partition("?")
        with self._lock:
            self.suppression_requests.append(path)
            group = _GROUP_PATH.match(route)
            if group:
                body: Any = list(self._group_suppressions.get(int(group.group(1)), []))
                return _Response(200, json.dumps(body).encode())
            name = route.removeprefix("/v3/suppression/")
            if name not in self._suppressions:
                return _error(404)
            rows = list(self._suppressions[name])
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
        try:
            start = int(params.get("start_time", 0))
            end = int(params.get("end_time", 2**62))
            limit = int(params.get("limit", SUPPRESSION_PAGE_MAX))
            offset = int(params.get("offset", 0))
        except ValueError:
            return _error(400, "start_time, end_time, limit and offset must be integers")
        if not 1 <= limit <= SUPPRESSION_PAGE_MAX or offset < 0:
            return _error(400, f"limit must be 1 to {SUPPRESSION_PAGE_MAX}, offset 0 or more")
        chosen = [r for r in rows if start <= int(r["created"]) <= end]
        chosen.sort(key=lambda r: -int(r["created"]))
        return _Response(200, json.dumps(chosen[offset : offset + limit]).encode())

    def _schedule_answer(
        self, method: str, path: str, headers: Message, raw: bytes | None
    ) -> _Response:
        """Batch ids and their pause/cancel status, as SendGrid's scheduled-sends API."""
        authorization = headers.get("Authorization", "").encode()
        if not hmac.compare_digest(authorization, f"Bearer {self.api_key}".encode()):
            return _error(401)
        route = path.partition("?")[0]
        if route == BATCH_PATH:
            if method != "POST":
                return _error(405)
            batch = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            batch = batch.replace("-", "x").replace("_", "y")
            with self._lock:
                self.scheduled_sends[batch] = None
            return _Response(201, json.dumps({"batch_id": batch}).encode())
        if route.startswith(BATCH_PATH + "/"):
            if method != "GET":
                return _error(405)
            batch = urllib.parse.unquote(route.removeprefix(BATCH_PATH + "/"))
            with self._lock:
                known = batch in self.scheduled_sends
            if not known:
                return _error(400, "invalid batch id")
            return _Response(200, json.dumps({"batch_id": batch}).encode())
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return _error(400)
        if route == SCHEDULED_PATH:
            if method != "POST":
                return _error(405)
            if not isinstance(body, dict) or set(body) != {"batch_id", "status"}:
                return _error(400, "batch_id and status are required, and nothing else")
            batch, state = body["batch_id"], body["status"]
            if state not in ("pause", "cancel") or not isinstance(batch, str):
                return _error(400, "status must be pause or cancel", "status")
            with self._lock:
                if batch not in self.scheduled_sends:
                    return _error(400, "invalid batch id", "batch_id")
                if self.scheduled_sends[batch] is not None:
                    return _error(400, "a status is already set for this batch id", "batch_id")
                if self._too_late(batch):
                    message = "cannot pause or cancel less than 10 minutes before send_at"
                    return _error(400, message, "batch_id")
                self.scheduled_sends[batch] = state
            return _Response(201, json.dumps(body).encode())
        batch = urllib.parse.unquote(route.removeprefix(SCHEDULED_PATH + "/"))
        with self._lock:
            state = self.scheduled_sends.get(batch)
            if batch not in self.scheduled_sends:
                return _error(404, "batch id not found")
            if method == "GET":
                found = [{"batch_id": batch, "status": state}] if state else []
                return _Response(200, json.dumps(found).encode())
            if method == "PATCH":
                if state is None:
                    return _error(404, "no status is set for this batch id")
                if not isinstance(body, dict) or body.get("status") not in ("pause", "cancel"):
                    return _error(400, "status must be pause or cancel", "status")
                self.scheduled_sends[batch] = body["status"]
                return _Response(204)
            if method == "DELETE":
                self.scheduled_sends[batch] = None
                return _Response(204)
        return _error(405)

    def _too_late(self, batch: str) -> bool:
        """A request of the batch goes out within 10 minutes (called under the lock)."""
        return any(
            a.body.get("batch_id") == batch
            and int(a.body.get("send_at", 0)) - time.time() < CANCEL_MARGIN
            for a in self._accepted
        )

    def _accept(self, body: Any, recipients: int, headers: Message) -> _Response:
        message_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        with self._lock:
            self._accepted_count += 1
            self._recipients += recipients
            if self.record:
                self._accepted.append(Accepted(body, message_id, _redacted(headers)))
        return _Response(202, headers={"X-Message-Id": message_id})


def _error(code: int, message: str | None = None, field: str | None = None) -> _Response:
    text = message or DEFAULT_MESSAGES.get(code, "error")
    return _Response(code, error_body(problem(text, field)))


def _is_sandbox(body: Any) -> bool:
    try:
        return body["mail_settings"]["sandbox_mode"]["enable"] is True
    except (KeyError, TypeError):
        return False


def _redacted(headers: Message) -> dict[str, str]:
    return {k: ("Bearer ***" if k.lower() == "authorization" else v) for k, v in headers.items()}


def _fault_response(fault: Fault) -> _Response:
    message = fault.message or DEFAULT_MESSAGES.get(fault.code, "error")
    body = fault.body if fault.body is not None else error_body(problem(message, fault.field))
    response = _Response(fault.code, body)
    if fault.code == 429:
        reset = int(time.time()) + max(fault.retry_after or 0, 1)
        limits = {"Limit": "600", "Remaining": "0", "Reset": str(reset)}
        response.headers.update({f"X-RateLimit-{k}": v for k, v in limits.items()})
    if fault.retry_after is not None:
        response.headers["Retry-After"] = str(fault.retry_after)
    response.headers.update(fault.headers)
    return response


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins only non-daemon handler threads
    block_on_close = True

    def __init__(self, owner: SendGridServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        """HTTPServer.server_bind without its reverse DNS lookup of 127.0.0.1."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (timed out, reset) is not the server's error."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sendgrid-loopback"
    timeout = 10  # an idle keep-alive connection is closed after this
    server: _HTTPServer
    fault: Fault | None = None

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.request, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.request, False)

    def handle(self) -> None:
        """Like BaseHTTPRequestHandler.handle, but a fault is drawn before a request is read."""
        while _request_waiting(self.request):
            self.fault = self.server.owner._next_fault()
            if self.fault is not None and self.fault.kind == "drop_before_read":
                _reset(self.request)
                return
            self.close_connection = True
            self.handle_one_request()
            if self.close_connection:
                return

    def do_POST(self) -> None:
        with self.server.owner._handling_one():
            self._handle_post()

    def _handle_post(self) -> None:
        fault = self.fault
        raw = self._read_body()
        if fault is not None and fault.kind == "slow":
            self.server.owner._closing.wait(fault.seconds)
        if fault is not None and fault.kind == "status":
            response = _fault_response(fault)
        elif fault is not None and fault.kind == "redirect":
            response = _Response(fault.code, headers={"Location": fault.location})
        else:
            response = self.server.owner._answer(self.command, self.path, self.headers, raw)
        if fault is not None and fault.kind == "drop_after_accept":
            self.close_connection = True
            return
        if fault is not None and fault.kind == "slow_answer":
            self.server.owner._closing.wait(fault.seconds)
        closing = fault is not None and fault.kind == "close_after_answer"
        if closing:
            # Held back (Linux's TCP_CORK) until the shutdown below: the answer and the end
            # of the stream reach the client together, as after a keep-alive timeout. Sent
            # apart, a client scheduled first could write its next request in between.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        self.send_response(response.code)
        if response.body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)
        if closing:
            self.request.shutdown(socket.SHUT_WR)
            self.close_connection = True

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def _read_body(self) -> bytes | None:
        """The body, or None if it is over the limit (then it is read and thrown away)."""
        length = int(self.headers.get("Content-Length") or 0)
        if length <= self.server.owner.max_body_bytes:
            return self.rfile.read(length)
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)
        return None

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _request_waiting(connection: socket.socket) -> bool:
    """Wait for the next request on a connection: False if the client closed it or went idle."""
    try:
        return bool(connection.recv(1, socket.MSG_PEEK))
    except OSError:
        return False


def _reset(connection: socket.socket, wait: float = 0.5) -> None:
    """Close with RST, once the whole request is in the socket buffer (or `wait` passed), so
    the client is waiting for the answer, not still sending, when the reset comes."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            seen = connection.recv(1 << 20, socket.MSG_PEEK)
        except OSError:
            break
        head, end, _ = seen.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if end and len(seen) >= len(head) + 4 + (int(length[1]) if length else 0):
            break
        time.sleep(0.001)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()
