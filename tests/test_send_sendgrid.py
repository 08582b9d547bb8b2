"""The SendGrid provider against a SendGrid-like HTTP server on 127.0.0.1.

The server checks every request body against SendGrid's OpenAPI spec and the live API's
extra rules (1000 recipients, no address twice), and expands each accepted request into
the per-recipient messages SendGrid would send.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.delivery.batches import Retries, retry_delay
from newsletter.delivery.send import SendOptions, send_issue
from newsletter.errors import SendStopped
from newsletter.storage.ledger import Ledger
from tests.sending import ISSUE_ID, SECRET, config, sg_env, sg_send, workspace
from tests.servers.sendgrid import (
    SendGridServer,
    drop_after_accept,
    drop_before_read,
    slow,
    slow_answer,
    status,
)
from tests.workspace import SAMPLE

FAST = {"backoff": 0.0, "max_backoff": 0.0}


def test_batches_of_1000_each_recipient_once_personalised(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 2500, "sendgrid:\n  category: weekly\n  asm_group_id: 4242\n")
    report = sg_send(ws, sendgrid_server)
    assert (report.sent, report.batches) == (2500, 3)
    sizes = [len(a.body["personalizations"]) for a in sendgrid_server.accepted]
    assert sorted(sizes) == [500, 1000, 1000]  # out at once, so in any order
    assert sendgrid_server.delivered_to() == {f"reader{i:05d}@example.com": 1 for i in range(2500)}
    body = sendgrid_server.accepted[0].body
    assert body["categories"] == ["weekly"]
    assert body["asm"] == {"group_id": 4242}
    assert body["custom_args"] == {"issue": ISSUE_ID, "list": "the-weekly-brief.example.org"}
    assert body["headers"]["List-Id"] == "The Weekly Brief <the-weekly-brief.example.org>"
    assert "mail_settings" not in body
    mail = next(d for d in sendgrid_server.deliveries() if d.email == "reader01234@example.com")
    assert mail.name == "Reader 1234"
    assert "Hi Reader 1234," in mail.contents["text/html"]
    assert "Hi Reader 1234," in mail.contents["text/plain"]
    slot = re.compile(r"nl[0-9a-f]{12}[ht]\d+x")
    assert not any(slot.search(text) for text in mail.contents.values())  # every slot filled
    unsubscribe = mail.headers["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://brief.example.org/unsubscribe?token=")
    assert mail.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token_url = unsubscribe[1:].split(">")[0]
    assert f'href="{token_url}"' in mail.contents["text/html"]
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        ids = Counter(d.provider_id for d in ledger.deliveries(ISSUE_ID))
    assert sorted(ids.values()) == [500, 1000, 1000]
    assert set(ids) == {a.message_id for a in sendgrid_server.accepted}


def test_names_are_escaped_in_html_and_plain_in_text(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 0)
    (ws / "list.csv").write_text('email,name\nann@example.com,"Ann <b>&amp; ""Co"""\n')
    sg_send(ws, sendgrid_server)
    (mail,) = sendgrid_server.deliveries()
    assert "Hi Ann &lt;b&gt;&amp;amp; &quot;Co&quot;," in mail.contents["text/html"]
    assert 'Hi Ann <b>&amp; "Co",' in mail.contents["text/plain"]


def test_sandbox_validates_and_delivers_nothing(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 30)
    report = sg_send(ws, sendgrid_server, sandbox=True)
    assert report.sandbox and report.sent == 30
    assert sendgrid_server.accepted == [] and len(sendgrid_server.sandboxed) == 1
    assert sendgrid_server.sandboxed[0].body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {}
    real = sg_send(ws, sendgrid_server)
    assert real.sent == 30


def test_rate_limits_and_server_errors_are_retried_honouring_retry_after(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    """Three batches out at once get a 429 (Retry-After: 7), a 500 and a 503 in whatever
    order their requests reach the server; the retries are settled in batch order. In every
    order the 7 s are waited exactly once: by whichever retry first knows of the 429, and
    counted from that answer, so no later retry waits them again."""
    ws = workspace(tmp_path / "ws", 30, "sendgrid:\n  batch_size: 10\n")
    sendgrid_server.inject(status(429, retry_after=7), status(500), status(503))
    now = [1000.0]  # a clock that moves only when the send sleeps
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    report = send_issue(
        config(ws, sg_env(sendgrid_server)),
        ws / SAMPLE,
        ws / "list.csv",
        SendOptions(provider="sendgrid", **FAST),
        sleep=sleep,
        clock=lambda: now[0],
    )
    assert report.sent == 30 and report.retries == 3
    assert sorted(waits) == [0.0, 0.0, 7.0]
    assert sendgrid_server.delivered_to() == {f"reader{i:05d}@example.com": 1 for i in range(30)}


@pytest.mark.parametrize(
    ("retry_after", "since", "expected"),
    [(7, 0, 7), (7, 2.5, 4.5), (7, 9, 0), (None, 0, 0), (0, 0, 0)],
)
def test_retry_after_counts_from_the_answer(
    retry_after: float | None, since: float, expected: float
) -> None:
    """Four requests out, four 429s: the first wait covers the other three."""
    retries = SendOptions(provider="sendgrid", **FAST).retries
    assert retry_delay(retries, 1, retry_after, since) == expected


def test_backoff_grows_with_the_attempt_and_is_capped() -> None:
    retries = Retries(backoff=1.0, max_backoff=6.0)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 6.0), (9, 6.0)):
        waits = [retry_delay(retries, attempt, None) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # jitter spreads over the whole range
    assert retry_delay(retries, 1, 30.0, since=1.0) == 29.0


def test_a_bad_request_stops_with_sendgrids_reason(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    # one request at a time, so the fault is known to hit the second batch
    ws = workspace(tmp_path / "ws", 30, "sendgrid:\n  batch_size: 10\n  concurrent_requests: 1\n")
    verified = "The from address does not match a verified Sender Identity."
    sendgrid_server.inject(slow(0), status(400, message=verified))
    with pytest.raises(SendStopped) as info:
        sg_send(ws, sendgrid_server)
    message = str(info.value)
    assert "SendGrid refused the request (400)" in message
    assert "verified Sender Identity" in message
    report = info.value.report
    assert (report.sent, report.failed) == (10, 10)
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {"sent": 10, "failed": 10}
    rerun = sg_send(ws, sendgrid_server)
    assert (rerun.sent, rerun.already_sent) == (20, 10)
    assert max(sendgrid_server.delivered_to().values()) == 1


def test_a_refusal_of_one_personalization_sets_its_recipient_aside(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    """SendGrid caps a personalization's substitutions at 10,000 bytes; a 6,000-character
    name (in the HTML and the text part) is over it, and the request is refused with a 400
    naming it: that recipient is rejected, with the reason, and the rest of the batch sent."""
    ws = workspace(tmp_path / "ws", 30, "sendgrid:\n  batch_size: 10\n  concurrent_requests: 1\n")
    rows = (ws / "list.csv").read_text().replace("Reader 13\n", "R" * 6000 + "\n")
    (ws / "list.csv").write_text(rows)
    report = sg_send(ws, sendgrid_server)
    assert (report.sent, report.rejected, report.failed) == (29, 1, 0)
    assert "reader00013@example.com" not in sendgrid_server.delivered_to()
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        (rejected,) = ledger.deliveries(ISSUE_ID, "rejected")
    assert rejected.email == "reader00013@example.com"
    assert "personalizations.3.substitutions: " in (rejected.error or "")


def test_a_wrong_key_says_so_and_never_prints_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 3)
    monkeypatch.chdir(ws)
    wrong = "SG.this-is-the-wrong-key-0123456789abcdef"
    env = {
        "SENDGRID_API_KEY": wrong,
        "SENDGRID_API_HOST": sendgrid_server.url,
        "NEWSLETTER_SECRET": SECRET,
    }
    for extra in ([], ["--json"]):
        result = CliRunner().invoke(
            app, ["send", SAMPLE, "--to", "list.csv", "--yes", "-p", "sendgrid", *extra], env=env
        )
        assert result.exit_code == 3
        assert "the API key is wrong or revoked: check SENDGRID_API_KEY" in result.output
        assert wrong not in result.output and SECRET not in result.output
    assert wrong.encode() not in (ws / ".newsletter" / "ledger.sqlite").read_bytes()


def test_no_debug_log_shows_the_key_or_addresses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sendgrid_server: SendGridServer
) -> None:
    """The requests go through urllib, which logs nothing; python_http_client logged every
    request's headers and body at DEBUG, if asked to."""
    import logging

    ws = workspace(tmp_path / "ws", 3)
    caplog.set_level(logging.DEBUG)
    report = sg_send(ws, sendgrid_server)
    assert report.sent == 3
    log = caplog.text
    assert sendgrid_server.api_key not in log and SECRET not in log
    assert "@example.com" not in log
    assert sendgrid_server.delivered_to() == {f"reader{i:05d}@example.com": 1 for i in range(3)}


def test_lost_answers_are_unknown_and_resent_only_on_request(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 30, "sendgrid:\n  batch_size: 10\n")
    sendgrid_server.inject(drop_after_accept())
    report = sg_send(ws, sendgrid_server)
    assert (report.sent, report.unknown) == (20, 10)
    assert sendgrid_server.delivered_to() == {f"reader{i:05d}@example.com": 1 for i in range(30)}
    rerun = sg_send(ws, sendgrid_server)
    assert (rerun.sent, rerun.unknown_before, rerun.already_sent) == (0, 10, 20)
    retried = sg_send(ws, sendgrid_server, retry_unknown=True)
    assert retried.sent == 10
    assert sorted(Counter(sendgrid_server.delivered_to().values()).items()) == [(1, 20), (2, 10)]


def test_a_dropped_connection_is_unknown_even_if_nothing_arrived(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    """The client cannot tell a reset before or after the server read the request."""
    ws = workspace(tmp_path / "ws", 20, "sendgrid:\n  batch_size: 10\n")
    sendgrid_server.inject(drop_before_read())
    report = sg_send(ws, sendgrid_server)
    assert (report.sent, report.unknown) == (10, 10)


def test_connection_refused_is_retried_then_reported(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 5)
    with SendGridServer("SG.key-for-a-server-that-is-gone") as gone:
        env = sg_env(gone)
    with pytest.raises(SendStopped, match=r"cannot reach SendGrid at http://127\.0\.0\.1:\d+"):
        send_issue(
            config(ws, env),
            ws / SAMPLE,
            ws / "list.csv",
            SendOptions(provider="sendgrid", max_attempts=3, **FAST),
            sleep=lambda s: None,
        )
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {"failed": 5}


def test_many_unknown_outcomes_in_a_row_stop_the_send(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 60, "sendgrid:\n  batch_size: 10\n  concurrent_requests: 1\n")
    sendgrid_server.inject(drop_after_accept(), drop_after_accept(), drop_after_accept())
    with pytest.raises(SendStopped, match="3 batches in a row with no answer"):
        sg_send(ws, sendgrid_server)
    assert sendgrid_server.requests == 3
    assert sendgrid_server.peak_concurrent_requests == 1


@pytest.mark.parametrize(("concurrency", "peak"), [(3, 3), (8, 6)])
def test_several_requests_are_out_at_once(
    tmp_path: Path, sendgrid_server: SendGridServer, concurrency: int, peak: int
) -> None:
    """The real API takes 100-300 ms a request: the waits overlap, up to the setting."""
    ws = workspace(
        tmp_path / "ws", 60, f"sendgrid:\n  batch_size: 10\n  concurrent_requests: {concurrency}\n"
    )
    sendgrid_server.inject(*[slow_answer(0.5)] * 6)  # long enough for all to start
    report = sg_send(ws, sendgrid_server)
    assert (report.sent, report.batches) == (60, 6)
    assert sendgrid_server.peak_concurrent_requests == peak
    assert sendgrid_server.delivered_to() == {f"reader{i:05d}@example.com": 1 for i in range(60)}
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        ids = Counter(d.provider_id for d in ledger.deliveries(ISSUE_ID))
    assert set(ids) == {a.message_id for a in sendgrid_server.accepted}
    assert set(ids.values()) == {10}


def test_a_refusal_with_requests_out_settles_them_and_starts_no_more(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 100, "sendgrid:\n  batch_size: 10\n  concurrent_requests: 3\n")
    # the first three requests arrive together; whichever comes second is refused
    sendgrid_server.inject(slow_answer(0.2), status(401), slow_answer(0.2))
    with pytest.raises(SendStopped, match="the API key is wrong") as info:
        sg_send(ws, sendgrid_server)
    report = info.value.report
    accepted = sendgrid_server.accepted_count
    # batches 1-3 go out; each settled before the refused one lets one more start
    assert sendgrid_server.requests == accepted + 1 <= 5
    assert (report.sent, report.failed) == (10 * accepted, 10)
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {"sent": 10 * accepted, "failed": 10}
        sent = {d.email for d in ledger.deliveries(ISSUE_ID, "sent")}
    assert sent == set(sendgrid_server.delivered_to())
    rerun = sg_send(ws, sendgrid_server)
    assert (rerun.sent, rerun.already_sent) == (100 - 10 * accepted, 10 * accepted)
    assert sendgrid_server.delivered_to() == {f"reader{i:05d}@example.com": 1 for i in range(100)}


def test_a_slow_server_is_waited_for(tmp_path: Path, sendgrid_server: SendGridServer) -> None:
    ws = workspace(tmp_path / "ws", 5)
    sendgrid_server.inject(slow(0.3))
    report = sg_send(ws, sendgrid_server)
    assert report.sent == 5


def test_the_api_key_is_required(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 1)
    from newsletter.errors import ConfigError

    with pytest.raises(ConfigError, match="SENDGRID_API_KEY is not set"):
        send_issue(config(ws, {}), ws / SAMPLE, ws / "list.csv", SendOptions(provider="sendgrid"))


@pytest.mark.parametrize(
    "name",
    ["", "Ann", 'O"Brien <b>&amp;', "Zoë \\ Ünal", "王小明", "tab\there", "\u2028odd", "x" * 500],
)
def test_the_json_text_body_is_the_payload(tmp_path: Path, name: str) -> None:
    """The hand-assembled request body parses to exactly the dict the payload builder makes."""
    import json

    from newsletter.delivery.campaign import prepare
    from newsletter.delivery.providers.base import section
    from newsletter.delivery.providers.sendgrid import PayloadBuilder, SendGridSettings
    from tests.sendgrid_payload import payload

    ws = workspace(tmp_path / "ws", 0, "sendgrid:\n  asm_group_id: 7\n")
    cfg = config(ws, {})
    campaign = prepare(cfg, ws / SAMPLE, allow_local_secret=False)
    settings = section(cfg, "sendgrid", SendGridSettings)
    builder = PayloadBuilder(campaign.view, settings, sandbox=True)
    batch = [
        campaign.recipient("ann@example.com", name, {"city": 'Oslo "N"'}),
        campaign.recipient("bob@example.org", ""),
    ]
    body = builder.body(batch)
    assert body.isascii()
    assert json.loads(body) == payload(builder, batch)
    for part in (batch[:1], batch[1:], []):
        assert json.loads(builder.body(part)) == payload(builder, part)


def test_a_stop_while_a_request_is_out_records_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sendgrid_server: SendGridServer
) -> None:
    """The next batch is read while one is in flight; Ctrl-C then still settles that one."""
    from newsletter.delivery.campaign import Campaign

    ws = workspace(tmp_path / "ws", 30, "sendgrid:\n  batch_size: 10\n")
    sendgrid_server.inject(slow_answer(0.3))
    real = Campaign.recipient
    made = []

    def recipient(self: Campaign, email: str, name: str, fields: object = None) -> object:
        made.append(email)
        if len(made) == 15:  # reading the second batch, the first still out
            raise KeyboardInterrupt
        return real(self, email, name, fields)  # type: ignore[arg-type]

    monkeypatch.setattr(Campaign, "recipient", recipient)
    with pytest.raises(KeyboardInterrupt):
        sg_send(ws, sendgrid_server)
    assert sendgrid_server.accepted_count == 1
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {"sent": 10}
        (send,) = ledger.sends(ISSUE_ID)
    assert send.status == "stopped"
