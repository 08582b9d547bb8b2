"""What a message that came back to the return path says: a bounce, a complaint, or neither.

`read_notice(raw)` takes the bytes of one message and tells which recipients failed and how
badly, without touching any state. It understands, in this order:

    ARF (RFC 5965)      multipart/report; report-type=feedback-report: a spam complaint
    DSN (RFC 3464)      multipart/report with message/delivery-status, as Postfix, Exim,
                        Gmail, Microsoft 365 and most MTAs send: Action, Status, Diagnostic-Code
    qmail               "Hi. This is the qmail-send program": <address>: paragraphs
    Exim (plain)        "The following address(es) failed:" and X-Failed-Recipients
    Exchange (plain)    "Delivery has failed to these recipients or groups:"
    auto-replies        Auto-Submitted, X-Autoreply, Precedence: auto_reply, "Out of Office":
                        never a bounce, so they count nothing

Severity follows the enhanced status code (RFC 3463): 5.x.x is permanent (hard), 4.x.x is
transient (soft), and a full mailbox (x.2.2, or the words "mailbox full" or "quota") is soft
whatever its class, as every large sender treats it. A DSN whose Action is `delayed` is a
warning that the MTA is still trying: it counts nothing.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses
from typing import Literal

Kind = Literal["bounce", "complaint", "autoreply", "delayed", "other"]
Severity = Literal["hard", "soft", "complaint"]

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_BASIC_CODE = re.compile(r"(?<![\d.])([45])\d\d(?![\d.])")
_ADDRESS = re.compile(r"[^\s<>()\[\]:;,\"']+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_FULL = re.compile(r"mailbox (is )?full|over ?quota|quota exceeded|insufficient storage", re.I)
_TOO_LONG = re.compile(r"in the queue too long|retry time(out| not reached)|delivery time", re.I)
_AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response)|auto:|"
    r"abwesenheitsnotiz|r[ée]ponse automatique|i am (currently )?away)",
    re.I,
)
_BOUNCE_SENDER = re.compile(r"mailer-daemon|postmaster|mail delivery (sub)?system", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status notification|has failed|failure)|mail delivery failed|"
    r"failure notice|returned mail|could not be delivered|non[- ]?delivery",
    re.I,
)
_HEADERS = HeaderParser(policy=email.policy.compat32)


@dataclass(frozen=True)
class Failure:
    """One recipient the report is about. `email` is None when the report hides it."""

    email: str | None
    severity: Severity
    status: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Notice:
    """What one returned message means.

    `delivered_to`: the addresses it came back to (the envelope sender, with its VERP token
    if the send used one), and the original's Return-Path if it was quoted.
    """

    kind: Kind
    form: str
    failures: tuple[Failure, ...]
    message_id: str
    original_message_id: str
    delivered_to: tuple[str, ...]
    subject: str


def parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def read_notice(raw: bytes) -> Notice:
    """Classify one returned message; never raises for a malformed one ("other")."""
    msg = parse(raw)
    original = _original_headers(msg)
    kind, form, failures = _classify(msg, original)
    return Notice(
        kind=kind,
        form=form,
        failures=tuple(failures),
        message_id=_one_line(msg.get("Message-ID", "")).strip(),
        original_message_id=_one_line(original.get("Message-ID", "")).strip() if original else "",
        delivered_to=tuple(_delivered_to(msg, original)),
        subject=_one_line(msg.get("Subject", "")),
    )


def _classify(msg: Message, original: Message | None) -> tuple[Kind, str, list[Failure]]:
    report_type = (msg.get_param("report-type") or "") if msg.is_multipart() else ""
    if msg.get_content_type() == "multipart/report" and str(report_type).lower() == (
        "feedback-report"
    ):
        return "complaint", "arf", _complaint(msg, original)
    status_part = _find(msg, "message/delivery-status")
    if status_part is not None:
        failures, delayed = _delivery_status(status_part, original)
        if failures:
            return "bounce", "rfc3464", failures
        return ("delayed" if delayed else "other"), "rfc3464", []
    text = _text(msg)
    if "This is the qmail-send program" in text:
        return _found("qmail", _qmail(text))
    if "could not be delivered to one or more of its" in text or msg.get("X-Failed-Recipients"):
        return _found("exim", _exim(msg, text))
    if "Delivery has failed to these recipients or groups" in text:
        return _found("exchange", _exchange(text))
    if _is_autoreply(msg):
        return "autoreply", "autoreply", []
    if _BOUNCE_SENDER.search(msg.get("From", "")) and _BOUNCE_SUBJECT.search(
        _one_line(msg.get("Subject", ""))
    ):
        # A bounce in words we do not know: hard if it says 5xx, and for whom only VERP knows.
        status = _status_in(text)
        if status:
            return "bounce", "text", [Failure(None, _severity(status, text), status, "")]
    return "other", "none", []


def _found(form: str, failures: list[Failure]) -> tuple[Kind, str, list[Failure]]:
    return ("bounce" if failures else "other"), form, failures


# --- RFC 3464 --------------------------------------------------------------------------------


def _delivery_status(part: Message, original: Message | None) -> tuple[list[Failure], bool]:
    failures: list[Failure] = []
    delayed = False
    for fields in _status_blocks(part):
        action = fields.get("Action", "").strip().lower()
        status = _first_status(fields.get("Status", ""))
        detail = _one_line(fields.get("Diagnostic-Code", "")).partition(";")[2].strip()
        recipient = _recipient_field(fields.get("Final-Recipient", "")) or _recipient_field(
            fields.get("Original-Recipient", "")
        )
        if not (action or recipient):
            continue  # the per-message block
        if action == "delayed" or (not action and status.startswith("4")):
            delayed = True
            continue
        if action and action != "failed":
            continue  # delivered, relayed, expanded
        status = status or _status_in(detail)
        failures.append(
            Failure(recipient or _original_to(original), _severity(status, detail), status, detail)
        )
    return failures, delayed


def _status_blocks(part: Message) -> Iterator[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        yield from (block for block in payload if isinstance(block, Message))
        return
    # some MTAs mislabel the part's encoding; parse its text as blocks of fields
    text = part.get_payload(decode=True) or b""
    for chunk in re.split(rb"\r?\n\s*\r?\n", bytes(text)):
        if chunk.strip():
            yield _HEADERS.parsestr(chunk.decode("utf-8", "replace"))


def _recipient_field(value: str) -> str | None:
    address = _one_line(value).partition(";")[2].strip().strip("<>").strip()
    return address or None


def _first_status(value: str) -> str:
    match = _STATUS.search(value)
    return match.group(0) if match else ""


def _status_in(text: str) -> str:
    """The enhanced status code in free text, else one made from a basic SMTP code."""
    match = _STATUS.search(text)
    if match:
        return match.group(0)
    basic = _BASIC_CODE.search(text)
    return f"{basic.group(1)}.0.0" if basic else ""


def _severity(status: str, detail: str) -> Severity:
    if status.startswith("4") or status.endswith(".2.2") or _FULL.search(detail):
        return "soft"
    return "hard"


# --- ARF (RFC 5965) --------------------------------------------------------------------------


def _complaint(msg: Message, original: Message | None) -> list[Failure]:
    part = _find(msg, "message/feedback-report")
    fields = _fields(part) if part is not None else Message()
    feedback_type = fields.get("Feedback-Type", "abuse").strip().lower()
    if feedback_type == "not-spam":
        return []
    recipient = _recipient_field("rfc822;" + fields.get("Original-Rcpt-To", "")) or (
        _original_to(original)
    )
    return [Failure(recipient, "complaint", "", f"feedback-type {feedback_type}")]


def _fields(part: Message) -> Message:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    raw = part.get_payload(decode=True) or b""
    return _HEADERS.parsestr(bytes(raw).decode("utf-8", "replace"))


# --- plain-text bounces ----------------------------------------------------------------------


def _qmail(text: str) -> list[Failure]:
    body = text.split("--- Below this line is a copy of the message.")[0]
    failures = []
    for paragraph in re.split(r"\n\s*\n", body):
        head = re.match(r"\s*<([^<>\s]+@[^<>\s]+)>:\s*\n?(.*)", paragraph, re.S)
        if not head:
            continue
        detail = " ".join(head.group(2).split())
        status = _status_in(detail) or "5.0.0"
        severity: Severity = "soft" if _TOO_LONG.search(detail) else _severity(status, detail)
        failures.append(Failure(head.group(1), severity, status, detail))
    return failures


def _exim(msg: Message, text: str) -> list[Failure]:
    failed = [addr for _, addr in getaddresses(msg.get_all("X-Failed-Recipients", [])) if addr]
    section = text.partition("failed:")[2].split("------ This is a copy")[0]
    details: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        if re.match(r"^ {2}\S+@\S+\s*$", line):
            current = line.strip().strip("<>")
            details[current] = ""
        elif current and line.startswith("    "):
            details[current] = (details[current] + " " + line.strip()).strip()
        elif current and not line.strip() and details[current]:
            current = None
    failures = []
    for address in failed or list(details):
        detail = details.get(address, "")
        status = _status_in(detail) or "5.0.0"
        failures.append(Failure(address, _severity(status, detail), status, detail))
    return failures


def _exchange(text: str) -> list[Failure]:
    rest = text.partition("Delivery has failed to these recipients or groups:")[2]
    listed, _, diagnostics = rest.partition("Diagnostic information for administrators:")
    addresses = list(dict.fromkeys(_ADDRESS.findall(listed)))
    detail = " ".join(diagnostics.split())[:300]
    status = _status_in(diagnostics) or _status_in(listed) or "5.0.0"
    return [Failure(a, _severity(status, detail), status, detail) for a in addresses]


# --- auto-replies ----------------------------------------------------------------------------


def _is_autoreply(msg: Message) -> bool:
    auto = msg.get("Auto-Submitted", "no").strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Autoresponse"):
        return True
    if msg.get("Precedence", "").strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.match(_one_line(msg.get("Subject", ""))))


# --- parts -----------------------------------------------------------------------------------


def _find(msg: Message, content_type: str) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _original_headers(msg: Message) -> Message | None:
    """The headers of the message that bounced, when the report quotes it."""
    if not msg.is_multipart():
        return None
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind == "text/rfc822-headers":
            raw = part.get_payload(decode=True) or b""
            return _HEADERS.parsestr(bytes(raw).decode("utf-8", "replace"))
    return None


def _original_to(original: Message | None) -> str | None:
    if original is None:
        return None
    found = [addr for _, addr in getaddresses(original.get_all("To", [])) if "@" in addr]
    return found[0] if len(found) == 1 else None


def _delivered_to(msg: Message, original: Message | None) -> Iterator[str]:
    names = ("Delivered-To", "X-Original-To", "Envelope-To", "To")
    for name in names:
        for _, addr in getaddresses(msg.get_all(name, [])):
            if "@" in addr:
                yield addr
    if original is not None:
        for _, addr in getaddresses(original.get_all("Return-Path", [])):
            if "@" in addr:
                yield addr


def _text(msg: Message) -> str:
    """The human-readable text of a message: its text/plain parts (quoted originals too)."""
    chunks = []
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            raw = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "utf-8"
            try:
                chunks.append(bytes(raw).decode(charset, "replace"))
            except LookupError:
                chunks.append(bytes(raw).decode("utf-8", "replace"))
    return "\n".join(chunks).replace("\r\n", "\n")


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
