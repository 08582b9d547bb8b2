"""Reading returned mail: each MTA's bounce form, complaints, and auto-replies that are none."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.lists.bounces import Notice, read_notice

DATA = Path(__file__).parent / "data" / "bounces"


def notice(name: str) -> Notice:
    return read_notice((DATA / name).read_bytes())


@pytest.mark.parametrize(
    ("name", "form", "expected"),
    [
        ("postfix_hard.eml", "rfc3464", [("gone@example.com", "hard", "5.1.1")]),
        ("gmail_hard.eml", "rfc3464", [("nobody.here@gmail.com", "hard", "5.1.1")]),
        ("gmail_over_quota.eml", "rfc3464", [("full.box@gmail.com", "soft", "4.2.2")]),
        (
            "exchange_online_hard.eml",
            "rfc3464",
            [("former.staff@contoso.example", "hard", "5.1.10")],
        ),
        (
            "exchange_plain_hard.eml",
            "exchange",
            [("old.mailbox@fabrikam.example", "hard", "5.1.1")],
        ),
        ("exim_plain_hard.eml", "exim", [("left.company@example.net", "hard", "5.1.1")]),
        (
            "qmail_hard.eml",
            "qmail",
            [
                ("no.such.user@example.info", "hard", "5.1.1"),
                ("far.away@example.info", "hard", "5.1.1"),
            ],
        ),
        ("qmail_queue_too_long.eml", "qmail", [("down.host@example.info", "soft", "5.0.0")]),
        ("mangled_hard.eml", "text", [(None, "hard", "5.0.0")]),
    ],
)
def test_each_bounce_form_names_the_recipient_and_its_severity(
    name: str, form: str, expected: list[tuple[str | None, str, str]]
) -> None:
    found = notice(name)
    assert (found.kind, found.form) == ("bounce", form)
    assert [(f.email, f.severity, f.status) for f in found.failures] == expected


def test_a_dsn_keeps_the_servers_words_for_the_editor() -> None:
    (failure,) = notice("postfix_hard.eml").failures
    assert failure.detail.startswith("550 5.1.1 <gone@example.com>: Recipient address rejected")
    assert "User unknown in virtual mailbox table" in failure.detail


def test_a_delay_warning_is_not_a_bounce() -> None:
    found = notice("postfix_delayed.eml")
    assert (found.kind, found.failures) == ("delayed", ())


@pytest.mark.parametrize(
    "name",
    ["autoreply_out_of_office.eml", "autoreply_x_autoreply.eml", "autoreply_subject_only.eml"],
)
def test_auto_replies_fail_no_one(name: str) -> None:
    found = notice(name)
    assert (found.kind, found.failures) == ("autoreply", ())


def test_a_dsn_marked_auto_replied_is_still_a_bounce() -> None:
    # Postfix and Gmail put Auto-Submitted: auto-replied on their DSNs, as RFC 3834 asks
    assert b"Auto-Submitted: auto-replied" in (DATA / "postfix_hard.eml").read_bytes()
    assert notice("postfix_hard.eml").kind == "bounce"


def test_an_arf_report_is_a_complaint_about_the_original_recipient() -> None:
    found = notice("arf_complaint.eml")
    assert (found.kind, found.form) == ("complaint", "arf")
    assert [(f.email, f.severity) for f in found.failures] == [("grumpy@example.com", "complaint")]
    assert found.original_message_id == "<176276564100.5.1111@news.example.org>"


def test_a_redacted_complaint_leaves_the_recipient_to_the_return_path() -> None:
    found = notice("arf_complaint_redacted.eml")
    assert [f.email for f in found.failures] == [None]
    assert "bounces+VERP-TOKEN@news.example.org" in found.delivered_to


def test_the_return_path_is_read_from_the_envelope_headers() -> None:
    found = notice("exim_plain_hard.eml")
    assert found.delivered_to[0] == "bounces+VERP-TOKEN@news.example.org"


def test_not_spam_feedback_is_no_complaint() -> None:
    raw = (
        (DATA / "arf_complaint.eml")
        .read_bytes()
        .replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    )
    assert read_notice(raw).failures == ()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not a message at all",
        b"Content-Type: multipart/report; report-type=delivery-status\n\nno boundary",
        b"From: someone@example.com\nSubject: hello\n\nA reader writes back.",
    ],
)
def test_anything_else_is_other_and_never_raises(raw: bytes) -> None:
    found = read_notice(raw)
    assert found.kind == "other"
    assert found.failures == ()


@pytest.mark.parametrize(
    ("status", "diagnostic", "severity"),
    [
        ("5.2.2", "552 5.2.2 Mailbox full", "soft"),  # full is passing, whatever its class
        ("5.0.0", "552 Requested mail action aborted: quota exceeded", "soft"),
        ("4.4.7", "Delivery time expired", "soft"),
        ("5.7.1", "550 5.7.1 Message rejected as spam", "hard"),
        ("5.1.2", "550 5.1.2 Host unknown", "hard"),
    ],
)
def test_severity_follows_the_status_code_and_a_full_mailbox_is_soft(
    status: str, diagnostic: str, severity: str
) -> None:
    raw = (DATA / "postfix_hard.eml").read_bytes()
    raw = raw.replace(b"Status: 5.1.1", f"Status: {status}".encode())
    raw = raw.replace(
        b"Diagnostic-Code: smtp; 550 5.1.1 <gone@example.com>: Recipient address\n"
        b"    rejected: User unknown in virtual mailbox table",
        f"Diagnostic-Code: smtp; {diagnostic}".encode(),
    )
    (failure,) = read_notice(raw).failures
    assert (failure.status, failure.severity) == (status, severity)


@given(st.binary(max_size=2000))
@settings(max_examples=200, deadline=None)
def test_no_bytes_make_the_reader_raise(raw: bytes) -> None:
    found = read_notice(raw)
    assert found.kind in ("bounce", "complaint", "autoreply", "delayed", "other")


@given(st.text(max_size=400))
@settings(max_examples=100, deadline=None)
def test_no_text_inside_a_report_makes_the_reader_raise(text: str) -> None:
    raw = (
        (DATA / "postfix_hard.eml")
        .read_bytes()
        .replace(b"Action: failed", text.encode("utf-8", "replace"))
    )
    read_notice(raw)
