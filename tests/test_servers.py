"""The loopback servers behave like SendGrid and an SMTP server, faults included.

The provider tests trust these servers, so each behaviour they rely on is proven here through
the real clients: the `sendgrid` library and `smtplib`.
"""

from __future__ import annotations

import http.client
import json
import smtplib
import socket
import threading
import time
from email.message import EmailMessage
from typing import Any, Literal

import pytest
from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from tests.servers import sendgrid as sg
from tests.servers import smtp
from tests.servers.sendgrid import (
    TEST_API_KEY,
    Delivered,
    SendGridServer,
    drop_after_accept,
    drop_before_read,
    slow,
    status,
)
from tests.servers.smtp import SMTPServer, drop, reply

# --- SendGrid -----------------------------------------------------------------------------------


def mail(*addresses: str, **changes: Any) -> dict[str, Any]:
    """A valid body: one personalization per address."""
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": a}]} for a in addresses or ["ada@example.com"]],
        "from": {"email": "editor@example.com", "name": "The Editor"},
        "subject": "Issue 1",
        "content": [
            {"type": "text/plain", "value": "Hello"},
            {"type": "text/html", "value": "<p>Hello</p>"},
        ],
    }
    body.update(changes)
    return body


def post(server: SendGridServer, body: object, *, key: str | None = None, **kwargs: Any) -> Any:
    client = SendGridAPIClient(key or server.api_key, host=server.url)
    return client.client.mail.send.post(request_body=body, **kwargs)


def errors(excinfo: pytest.ExceptionInfo[http_errors.HTTPError]) -> list[dict[str, Any]]:
    parsed: list[dict[str, Any]] = json.loads(excinfo.value.body)["errors"]
    return parsed


def test_a_valid_body_is_accepted_with_a_message_id(sendgrid_server: SendGridServer) -> None:
    body = mail("ada@example.com")
    first = post(sendgrid_server, body)
    second = post(sendgrid_server, body)

    assert (first.status_code, first.body) == (202, b"")
    ids = [first.headers["X-Message-Id"], second.headers["X-Message-Id"]]
    assert ids[0] and ids[0] != ids[1]
    accepted = sendgrid_server.accepted
    assert [a.body for a in accepted] == [body, body]
    assert [a.message_id for a in accepted] == ids
    assert accepted[0].headers["Authorization"] == "Bearer ***"
    assert sendgrid_server.requests == 2


def personalizations_without_to() -> dict[str, Any]:
    return mail(personalizations=[{"subject": "x"}])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"from": {"email": "e@example.com"}}, "personalizations", id="no-pers"),
        pytest.param(personalizations_without_to(), "personalizations.0.to", id="no-to"),
        pytest.param(mail("not-an-address"), "personalizations.0.to.0.email", id="bad-address"),
        pytest.param(mail(categories=[f"c{i}" for i in range(11)]), "categories", id="11-cats"),
        pytest.param(mail(custom_args="issue=1"), "custom_args", id="custom-args-str"),
        pytest.param(mail(content=[{"type": "text/plain", "value": ""}]), "content.0.value"),
    ],
)
def test_the_schema_refuses_a_bad_body(
    sendgrid_server: SendGridServer, body: dict[str, Any], field: str
) -> None:
    with pytest.raises(http_errors.BadRequestsError) as excinfo:
        post(sendgrid_server, body)

    assert excinfo.value.status_code == 400
    assert field in [e["field"] for e in errors(excinfo)]
    assert all(set(e) == {"message", "field", "help"} for e in errors(excinfo))
    assert sendgrid_server.accepted == []


def thousand_and_one() -> dict[str, Any]:
    body = mail(*(f"reader{i}@example.com" for i in range(1000)))
    body["personalizations"][0]["cc"] = [{"email": "one.more@example.com"}]
    return body


def with_personalization(**fields: Any) -> dict[str, Any]:
    body = mail()
    body["personalizations"][0].update(fields)
    return body


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in mail().items() if k != key}


TOO_BIG = "v" * 10_000
LIVE_RULES = {
    "1001-recipients": (thousand_and_one(), "personalizations"),
    "duplicate": (mail("ada@example.com", "Ada@Example.com"), "personalizations.1.to.0.email"),
    "no-subject": (without("subject"), "personalizations.0.subject"),
    "no-content": (without("content"), "content"),
    "html-first": (mail(content=mail()["content"][::-1]), "content"),
    "args-size": (
        with_personalization(custom_args={"k": TOO_BIG}),
        "personalizations.0.custom_args",
    ),
    "subs-size": (
        with_personalization(substitutions={"-k-": TOO_BIG}),
        "personalizations.0.substitutions",
    ),
    "arg-int": (with_personalization(custom_args={"n": 1}), "personalizations.0.custom_args.n"),
    "reserved-header": (mail(headers={"Subject": "x"}), "headers.Subject"),
    "reply-to-both": (
        mail(reply_to={"email": "a@example.com"}, reply_to_list=[{"email": "b@example.com"}]),
        "reply_to_list",
    ),
    "send-at-73h": (mail(send_at=int(time.time()) + 73 * 3600), "send_at"),
    "not-base64": (
        mail(attachments=[{"content": "no!", "filename": "a"}]),
        "attachments.0.content",
    ),
}


@pytest.mark.parametrize(("body", "field"), LIVE_RULES.values(), ids=LIVE_RULES.keys())
def test_the_live_rules_the_spec_misses_refuse_a_body(
    sendgrid_server: SendGridServer, body: dict[str, Any], field: str
) -> None:
    with pytest.raises(http_errors.BadRequestsError) as excinfo:
        post(sendgrid_server, body)

    assert [e["field"] for e in errors(excinfo)] == [field]
    assert sendgrid_server.accepted == []


def test_what_the_live_api_accepts_is_accepted(sendgrid_server: SendGridServer) -> None:
    templated = {k: v for k, v in mail().items() if k not in ("subject", "content")}
    post(sendgrid_server, {**templated, "template_id": "d-0123456789abcdef"})
    post(sendgrid_server, mail(custom_args={"issue": "1"}))  # an object, though the spec says str
    post(sendgrid_server, mail(*(f"reader{i}@example.com" for i in range(1000))))
    at_the_limit = "v" * (10_000 - 1)  # the key is one byte
    post(sendgrid_server, with_personalization(custom_args={"k": at_the_limit}))
    post(sendgrid_server, with_personalization(substitutions={"k": at_the_limit}))

    assert len(sendgrid_server.accepted) == 5


@pytest.mark.parametrize("key", ["SG.wrong", ""])
def test_a_wrong_or_missing_key_is_401(sendgrid_server: SendGridServer, key: str) -> None:
    client = SendGridAPIClient(key or "unused", host=sendgrid_server.url)
    if not key:
        del client.client.request_headers["Authorization"]

    with pytest.raises(http_errors.UnauthorizedError) as excinfo:
        client.client.mail.send.post(request_body=mail())

    assert excinfo.value.status_code == 401
    assert errors(excinfo)[0]["message"]
    assert sendgrid_server.accepted == []


def test_sandbox_mode_checks_everything_and_delivers_nothing(
    sendgrid_server: SendGridServer,
) -> None:
    sandbox = {"sandbox_mode": {"enable": True}}
    response = post(sendgrid_server, mail(mail_settings=sandbox))
    with pytest.raises(http_errors.BadRequestsError):
        post(sendgrid_server, mail("not-an-address", mail_settings=sandbox))

    assert response.status_code == 200
    assert "X-Message-Id" not in response.headers
    assert (sendgrid_server.accepted, sendgrid_server.deliveries()) == ([], [])
    assert [s.body["mail_settings"] for s in sendgrid_server.sandboxed] == [sandbox]


def test_a_body_over_the_size_limit_is_413() -> None:
    with SendGridServer(TEST_API_KEY, max_body_bytes=2000) as server:
        with pytest.raises(http_errors.PayloadTooLargeError):
            post(server, mail(content=[{"type": "text/plain", "value": "x" * 2000}]))
        post(server, mail())

        assert len(server.accepted) == 1


def test_unknown_paths_and_methods_are_404_and_405(sendgrid_server: SendGridServer) -> None:
    client = SendGridAPIClient(sendgrid_server.api_key, host=sendgrid_server.url).client
    with pytest.raises(http_errors.NotFoundError):
        client.mail.settings.post()  # not served (the batch endpoint is)
    with pytest.raises(http_errors.MethodNotAllowedError):
        client.mail.send.get()


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (status(429, retry_after=1), http_errors.TooManyRequestsError),
        (status(500), http_errors.InternalServerError),
        (status(503), http_errors.ServiceUnavailableError),
        (status(400, message="Invalid batch id"), http_errors.BadRequestsError),
        (status(403), http_errors.ForbiddenError),
        (status(413), http_errors.PayloadTooLargeError),
    ],
    ids=lambda v: getattr(v, "label", ""),
)
def test_an_injected_status_is_what_the_client_gets_once(
    sendgrid_server: SendGridServer, fault: sg.Fault, error: type[Exception]
) -> None:
    sendgrid_server.inject(fault)
    with pytest.raises(error) as excinfo:
        post(sendgrid_server, mail())
    after = post(sendgrid_server, mail())

    assert isinstance(excinfo.value, http_errors.HTTPError)
    assert excinfo.value.status_code == fault.code
    assert errors(excinfo)[0]["message"] == (fault.message or sg.DEFAULT_MESSAGES[fault.code])
    assert after.status_code == 202
    assert len(sendgrid_server.accepted) == 1
    assert sendgrid_server.faults_injected == {fault.label: 1}
    assert sendgrid_server.requests == 2


def test_a_429_carries_retry_after_and_the_rate_limit_headers(
    sendgrid_server: SendGridServer,
) -> None:
    sendgrid_server.inject(status(429, retry_after=7, headers={"X-Extra": "yes"}))
    with pytest.raises(http_errors.TooManyRequestsError) as excinfo:
        post(sendgrid_server, mail())

    headers = excinfo.value.headers
    assert headers["Retry-After"] == "7"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert int(headers["X-RateLimit-Reset"]) >= time.time() + 6
    assert headers["X-RateLimit-Limit"] and headers["X-Extra"] == "yes"


def test_drop_before_read_resets_and_delivers_nothing(sendgrid_server: SendGridServer) -> None:
    sendgrid_server.inject(drop_before_read())
    with pytest.raises(ConnectionResetError):
        post(sendgrid_server, mail())

    assert sendgrid_server.accepted == []
    assert sendgrid_server.requests == 1


def test_drop_after_accept_delivers_but_never_answers(sendgrid_server: SendGridServer) -> None:
    sendgrid_server.inject(drop_after_accept())
    with pytest.raises(http.client.RemoteDisconnected):
        post(sendgrid_server, mail("ada@example.com"))

    assert [d.email for d in sendgrid_server.deliveries()] == ["ada@example.com"]
    assert sendgrid_server.accepted_count == 1


def test_slow_answers_late_and_a_client_that_gave_up_was_still_accepted(
    sendgrid_server: SendGridServer,
) -> None:
    sendgrid_server.inject(slow(0.4), slow(0.2))
    with pytest.raises(TimeoutError):
        post(sendgrid_server, mail("ada@example.com"), timeout=0.1)
    started = time.monotonic()
    response = post(sendgrid_server, mail("bob@example.com"))

    assert response.status_code == 202
    assert time.monotonic() - started >= 0.2
    deadline = time.monotonic() + 2
    while sendgrid_server.accepted_count < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(d.email for d in sendgrid_server.deliveries()) == [
        "ada@example.com",
        "bob@example.com",
    ]


def test_injected_faults_apply_to_the_next_requests_in_order(
    sendgrid_server: SendGridServer,
) -> None:
    sendgrid_server.inject(status(500), status(503))
    codes = []
    for _ in range(3):
        try:
            codes.append(post(sendgrid_server, mail()).status_code)
        except http_errors.HTTPError as error:
            codes.append(error.status_code)

    assert codes == [500, 503, 202]


def outcomes(seed: int, count: int = 30) -> tuple[list[int], dict[str, int]]:
    with SendGridServer(TEST_API_KEY, validate=False, record=False) as server:
        server.random_faults(seed, 0.5, kinds=[status(500), status(503)])
        codes = []
        for _ in range(count):
            try:
                codes.append(post(server, mail()).status_code)
            except http_errors.HTTPError as error:
                codes.append(error.status_code)
        return codes, dict(server.faults_injected)


def test_random_faults_are_reproducible_for_a_seed() -> None:
    codes, injected = outcomes(seed=7)

    assert outcomes(seed=7) == (codes, injected)
    assert outcomes(seed=8)[0] != codes
    assert {500, 503, 202} == set(codes)
    assert injected == {"status_500": codes.count(500), "status_503": codes.count(503)}


def test_deliveries_are_one_per_recipient_and_personalised(
    sendgrid_server: SendGridServer,
) -> None:
    body = mail(
        subject="News for -name-",
        content=[
            {"type": "text/plain", "value": "Hi -name-, -name--x"},
            {"type": "text/html", "value": "<p>Hi -name-</p>"},
        ],
        headers={"X-Issue": "1", "List-Unsubscribe": "<mailto:u@example.com>"},
        custom_args={"issue": "1"},
        categories=["newsletter"],
    )
    body["personalizations"] = [
        {
            "to": [{"email": "ada@example.com", "name": "Ada"}],
            "substitutions": {"-name-": "Ada", "-name--x": "long tag"},
            "headers": {"List-Unsubscribe": "<https://example.com/u/ada>"},
            "custom_args": {"subscriber": "ada"},
        },
        {"to": [{"email": "bob@example.com"}], "subject": "Bob only", "substitutions": {}},
    ]
    message_id = post(sendgrid_server, body).headers["X-Message-Id"]

    assert sendgrid_server.deliveries() == [
        Delivered(
            email="ada@example.com",
            name="Ada",
            kind="to",
            from_email="editor@example.com",
            subject="News for Ada",
            contents={"text/plain": "Hi Ada, long tag", "text/html": "<p>Hi Ada</p>"},
            headers={"X-Issue": "1", "List-Unsubscribe": "<https://example.com/u/ada>"},
            custom_args={"issue": "1", "subscriber": "ada"},
            categories=("newsletter",),
            message_id=message_id,
        ),
        Delivered(
            email="bob@example.com",
            name=None,
            kind="to",
            from_email="editor@example.com",
            subject="Bob only",
            contents={"text/plain": "Hi -name-, -name--x", "text/html": "<p>Hi -name-</p>"},
            headers={"X-Issue": "1", "List-Unsubscribe": "<mailto:u@example.com>"},
            custom_args={"issue": "1"},
            categories=("newsletter",),
            message_id=message_id,
        ),
    ]


def test_benchmark_mode_checks_only_the_key_and_keeps_only_counters() -> None:
    with SendGridServer(
        TEST_API_KEY, validate=False, record=False, count_recipients=True
    ) as server:
        response = post(server, {"personalizations": [{"to": [{"email": "x"}] * 3}]})
        with pytest.raises(http_errors.UnauthorizedError):
            post(server, mail(), key="SG.wrong")

        assert response.status_code == 202 and response.headers["X-Message-Id"]
        assert (server.accepted, server.accepted_count, server.recipients) == ([], 1, 3)


def test_a_missing_spec_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv(sg.SPEC_ENV, str(tmp_path / "missing.json"))

    with pytest.raises(FileNotFoundError, match=sg.SPEC_ENV):
        SendGridServer(TEST_API_KEY)


def test_the_sendgrid_server_stops_cleanly() -> None:
    threads = threading.active_count()
    with SendGridServer(TEST_API_KEY) as server:
        idle = socket.create_connection(("127.0.0.1", server.port))  # a keep-alive left open
        post(server, mail())
    idle.close()

    assert threading.active_count() == threads
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port)).close()


# --- SMTP ---------------------------------------------------------------------------------------


def message(to: str = "ada@example.com", subject: str = "Issue 1") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "editor@example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Hello\n")
    return msg


def test_one_connection_carries_many_messages(smtp_server: SMTPServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.send_message(message("ada@example.com", "First"))
        client.send_message(message("bob@example.com", "Second"))

    received = smtp_server.messages
    assert smtp_server.connections == 1
    assert [(m.mail_from, m.rcpt_tos) for m in received] == [
        ("editor@example.com", ["ada@example.com"]),
        ("editor@example.com", ["bob@example.com"]),
    ]
    assert [m.message["Subject"] for m in received] == ["First", "Second"]
    assert received[0].message.get_content() == "Hello\n"


def test_a_rejected_recipient_is_refused_and_the_others_delivered(
    smtp_server: SMTPServer,
) -> None:
    smtp_server.reject("Gone@Example.com", 550, "5.1.1 No such user")
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as excinfo:
            client.send_message(message("gone@example.com"))
        refused = client.sendmail(
            "editor@example.com", ["ada@example.com", "gone@example.com"], b"Subject: x\r\n\r\nx"
        )

    assert excinfo.value.recipients == {"gone@example.com": (550, b"5.1.1 No such user")}
    assert refused == {"gone@example.com": (550, b"5.1.1 No such user")}
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ada@example.com"]]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (reply(421, at="MAIL"), smtplib.SMTPSenderRefused),
        (reply(451, at="MAIL"), smtplib.SMTPSenderRefused),
        (reply(421, at="RCPT"), smtplib.SMTPRecipientsRefused),
        (reply(451, at="RCPT"), smtplib.SMTPRecipientsRefused),
        (reply(421, at="DATA"), smtplib.SMTPDataError),
        (reply(451, at="DATA"), smtplib.SMTPDataError),
    ],
    ids=["421-MAIL", "451-MAIL", "421-RCPT", "451-RCPT", "421-DATA", "451-DATA"],
)
def test_an_injected_reply_is_the_smtplib_error_for_one_transaction(
    smtp_server: SMTPServer, fault: smtp.SMTPFault, error: type[smtplib.SMTPException]
) -> None:
    smtp_server.inject(fault)
    client = smtplib.SMTP(smtp_server.host, smtp_server.port)
    with pytest.raises(error) as excinfo:
        client.send_message(message())
    if fault.code == 421:  # smtplib has closed; a new connection (and EHLO) is needed
        assert client.sock is None
        client = smtplib.SMTP(smtp_server.host, smtp_server.port)
    with client:
        client.send_message(message("bob@example.com"))

    raised = excinfo.value
    if isinstance(raised, smtplib.SMTPRecipientsRefused):
        assert raised.recipients["ada@example.com"][0] == fault.code
    else:
        assert isinstance(raised, smtplib.SMTPResponseException)
        assert raised.smtp_code == fault.code
    assert [m.rcpt_tos for m in smtp_server.messages] == [["bob@example.com"]]
    assert smtp_server.connections == (2 if fault.code == 421 else 1)
    assert smtp_server.faults_injected == {fault.label: 1}


@pytest.mark.parametrize("at", ["MAIL", "RCPT", "DATA"])
def test_the_server_closes_the_connection_after_an_injected_421(
    smtp_server: SMTPServer, at: Literal["MAIL", "RCPT", "DATA"]
) -> None:
    smtp_server.inject(reply(421, at=at))
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.ehlo()
        replies = [client.mail("editor@example.com")[0]]
        if at != "MAIL":
            replies.append(client.rcpt("ada@example.com")[0])
        if at == "DATA":
            replies.append(client.data(b"Subject: x\r\n\r\nx")[0])
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()

    assert replies[-1] == 421 and replies[:-1] == [250] * (len(replies) - 1)
    assert smtp_server.messages == []


@pytest.mark.parametrize("stored", [True, False])
def test_a_drop_at_the_end_of_data_is_an_unknown_outcome(
    smtp_server: SMTPServer, stored: bool
) -> None:
    smtp_server.inject(drop(stored=stored))
    client = smtplib.SMTP(smtp_server.host, smtp_server.port)
    with client, pytest.raises(smtplib.SMTPServerDisconnected):
        client.send_message(message())

    assert len(smtp_server.messages) == (1 if stored else 0)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_with_the_right_password(mechanism: str) -> None:
    with SMTPServer(username="editor", password="s3cret") as server:
        with smtplib.SMTP(server.host, server.port) as client:
            client.ehlo()
            assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
            client.user, client.password = "editor", "s3cret"
            code, _ = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
            client.send_message(message())

        assert code == 235
        assert [m.login for m in server.messages] == ["editor"]


def test_auth_with_a_wrong_password_or_none_is_refused() -> None:
    with SMTPServer(username="editor", password="s3cret") as server:
        with smtplib.SMTP(server.host, server.port) as client:
            with pytest.raises(smtplib.SMTPSenderRefused) as unauthenticated:
                client.send_message(message())
            with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
                client.login("editor", "guess")

        assert unauthenticated.value.smtp_code == 530
        assert wrong.value.smtp_code == 535
        assert server.messages == []


def test_8bitmime_and_smtputf8_are_offered_and_used(smtp_server: SMTPServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.ehlo()
        offered = (client.has_extn("8bitmime"), client.has_extn("smtputf8"))
        assert not client.has_extn("auth")
        client.send_message(message("zoë@example.com", "Grüße"))

    assert offered == (True, True)
    received = smtp_server.messages[0]
    assert "SMTPUTF8" in received.mail_options
    assert (received.rcpt_tos, received.message["Subject"]) == (["zoë@example.com"], "Grüße")


def smtp_outcomes(seed: int, count: int = 30) -> list[str]:
    kinds = [reply(451, at="MAIL"), reply(451, at="RCPT"), reply(451, at="DATA")]
    results = []
    with SMTPServer() as server:
        server.random_faults(seed, 0.5, kinds)
        with smtplib.SMTP(server.host, server.port) as client:
            for _ in range(count):
                try:
                    client.send_message(message())
                    results.append("ok")
                except smtplib.SMTPException as error:
                    results.append(type(error).__name__)
        assert len(server.messages) == results.count("ok")
        assert sum(server.faults_injected.values()) == count - results.count("ok")
    return results


def test_smtp_random_faults_are_reproducible_for_a_seed() -> None:
    results = smtp_outcomes(seed=3)

    assert smtp_outcomes(seed=3) == results
    assert set(results) == {
        "ok",
        "SMTPSenderRefused",
        "SMTPRecipientsRefused",
        "SMTPDataError",
    }


def test_the_smtp_server_stops_cleanly_with_a_client_still_connected() -> None:
    threads = threading.active_count()
    with SMTPServer() as server:
        client = smtplib.SMTP(server.host, server.port)
        client.noop()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    client.close()

    assert threading.active_count() == threads
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port)).close()
