"""Recipients SendGrid would lose or refuse as a whole batch: names it splits at `,` or `;`,
internationalised addresses, and one refused personalization among many.

The SendGrid-like server on 127.0.0.1 checks every body against the spec and the live API's
rules, including the two that cost readers their mail: a bare `,`/`;` in a name and a
non-ASCII address.
"""

from __future__ import annotations

import time
from pathlib import Path

from newsletter.delivery.send import Report, SendOptions, dry_run, send_issue
from newsletter.storage.ledger import Ledger
from tests.sending import ISSUE_ID, config, workspace
from tests.servers.sendgrid import SendGridServer, live_problems, status
from tests.workspace import SAMPLE


def _send_to(ws: Path, server: SendGridServer, rows: str) -> Report:
    (ws / "list.csv").write_text("email,name\n" + rows, encoding="utf-8")
    cfg = config(ws, {"SENDGRID_API_KEY": server.api_key, "SENDGRID_API_HOST": server.url})
    options = SendOptions(provider="sendgrid", backoff=0.0, max_backoff=0.0)
    return send_issue(cfg, ws / SAMPLE, ws / "list.csv", options)


def _to(server: SendGridServer) -> dict[str, str | None]:
    return {
        to["email"]: to.get("name")
        for accepted in server.accepted
        for p in accepted.body["personalizations"]
        for to in p["to"]
    }


def test_the_live_rules_refuse_a_bare_comma_or_semicolon_in_a_name() -> None:
    def body(name: str) -> dict[str, object]:
        return {
            "personalizations": [{"to": [{"email": "k@example.org", "name": name}]}],
            "subject": "s",
            "content": [{"type": "text/plain", "value": "v"}],
        }

    for bad in ("Johnson, Katherine", "Smith; Jo"):
        problems = live_problems(body(bad), time.time())
        assert [p["field"] for p in problems] == ["personalizations.0.to.0.name"]
    for good in ('"Johnson, Katherine"', "Ada Lovelace", '"say \\"hi\\", then"'):
        assert live_problems(body(good), time.time()) == []


def test_names_with_list_separators_go_quoted_and_are_delivered(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 0)
    rows = (
        'katherine@example.org,"Johnson, Katherine"\n'
        "jo@example.org,Smith; Jo\n"
        'pat@example.org,"O""Brien, Pat"\n'
        "ada@example.org,Ada Lovelace\n"
    )
    report = _send_to(ws, sendgrid_server, rows)
    assert (report.sent, report.rejected, report.failed) == (4, 0, 0)
    assert _to(sendgrid_server) == {
        "katherine@example.org": '"Johnson, Katherine"',
        "jo@example.org": '"Smith; Jo"',
        "pat@example.org": '"O\\"Brien, Pat"',
        "ada@example.org": "Ada Lovelace",
    }
    greeting = next(
        d for d in sendgrid_server.deliveries() if d.email == "katherine@example.org"
    ).contents["text/plain"]
    assert "Johnson, Katherine" in greeting and '"Johnson' not in greeting  # the text is as is


def test_an_internationalised_domain_goes_out_in_its_ascii_form(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 0)
    report = _send_to(ws, sendgrid_server, "ada@exämple.com,Ada\nbob@example.com,Bob\n")
    assert report.sent == 2
    assert set(_to(sendgrid_server)) == {"ada@xn--exmple-cua.com", "bob@example.com"}
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:  # the ledger keeps the list's
        assert {d.email for d in ledger.deliveries(ISSUE_ID, "sent")} == {
            "ada@exämple.com",
            "bob@example.com",
        }


def test_a_non_ascii_local_part_is_skipped_with_its_reason_not_the_whole_batch(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 0)
    rows = "ada@example.com,Ada\nüñí@exämple.com,Uni\nbob@example.com,Bob\n"
    (ws / "list.csv").write_text("email,name\n" + rows, encoding="utf-8")
    cfg = config(
        ws, {"SENDGRID_API_KEY": sendgrid_server.api_key, "SENDGRID_API_HOST": sendgrid_server.url}
    )
    plan = dry_run(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="sendgrid"))
    assert plan.to_send == 2
    (skipped,) = plan.skipped_rows
    assert skipped.email == "üñí@exämple.com" and skipped.line == 3
    assert "SendGrid" in skipped.detail and "non-ASCII" in skipped.detail

    report = _send_to(ws, sendgrid_server, rows)
    assert report.sent == 2
    assert sum(report.skipped.values()) == 1
    assert set(_to(sendgrid_server)) == {"ada@example.com", "bob@example.com"}
    skipped_csv = (ws / "build" / f"{ISSUE_ID}-skipped.csv").read_text(encoding="utf-8")
    assert "üñí@exämple.com" in skipped_csv and "SendGrid" in skipped_csv


def test_a_400_naming_one_personalization_sets_that_recipient_aside_and_sends_the_rest(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 0)
    sendgrid_server.inject(
        status(
            400, message="Does not contain a valid address.", field="personalizations.1.to.0.email"
        )
    )
    rows = "ada@example.com,Ada\nbad@example.com,Bad\nbob@example.com,Bob\n"
    report = _send_to(ws, sendgrid_server, rows)
    assert (report.sent, report.rejected, report.failed, report.unknown) == (2, 1, 0, 0)
    assert set(_to(sendgrid_server)) == {"ada@example.com", "bob@example.com"}
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        (rejected,) = ledger.deliveries(ISSUE_ID, "rejected")
        assert rejected.email == "bad@example.com"
        assert {d.email for d in ledger.deliveries(ISSUE_ID, "sent")} == {
            "ada@example.com",
            "bob@example.com",
        }


def test_a_400_that_names_no_personalization_still_stops_the_batch(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    import pytest

    from newsletter.errors import SendStopped

    ws = workspace(tmp_path / "ws", 0)
    sendgrid_server.inject(status(400, message="The from address is invalid.", field="from.email"))
    with pytest.raises(SendStopped) as info:
        _send_to(ws, sendgrid_server, "ada@example.com,Ada\nbob@example.com,Bob\n")
    assert info.value.report.failed == 2
    assert sendgrid_server.accepted == []


def test_an_internationalised_sender_domain_goes_in_its_ascii_form_too(
    tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    ws = workspace(tmp_path / "ws", 0)
    yaml = (ws / "newsletter.yaml").read_text(encoding="utf-8")
    (ws / "newsletter.yaml").write_text(
        yaml.replace("email: brief@example.org", "email: brief@exämple.org"), encoding="utf-8"
    )
    report = _send_to(ws, sendgrid_server, "ada@example.com,Ada\n")
    assert report.sent == 1
    assert sendgrid_server.accepted[0].body["from"]["email"] == "brief@xn--exmple-cua.org"
