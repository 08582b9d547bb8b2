"""`newsletter serve`, the real server in a subprocess, driven over HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import mailbox
import re
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from newsletter.config import Config, load_config
from newsletter.delivery.send import SendOptions, send_issue
from newsletter.lists.tokens import PurposeSigner, Signer
from newsletter.storage.store import open_store
from newsletter.web.archive import build_archive
from newsletter.web.favicon import favicon_ico
from tests.sending import ISSUE_ID, SECRET, readers
from tests.servers.reader import Answer, ReaderServer, serving
from tests.workspace import REPO, SAMPLE, make_workspace

LIST_ID = "the-weekly-brief.example.org"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = b"List-Unsubscribe=One-Click"

KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


def service_config(port: int) -> str:
    text = (REPO / "newsletter.yaml").read_text()
    text = re.sub(r"(?m)^  url: https://brief.example.org/unsubscribe\n", "", text)
    return text + f"service:\n  url: http://127.0.0.1:{port}\n"


def write_service_config(root: Path, port: int) -> None:
    (root / "newsletter.yaml").write_text(service_config(port))


class Reader:
    """The workspace and its running service, shared by the module's tests."""

    def __init__(self, root: Path, server: ReaderServer, env: dict[str, str]) -> None:
        self.root = root
        self.server = server
        self.env = env

    @property
    def config(self) -> Config:
        return load_config(self.root / "newsletter.yaml", env=self.env)

    def suppressed(self) -> dict[str, str]:
        with open_store(self.config) as store:
            return {s.email: s.kind for s in store.suppressions()}

    def state(self) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """Everything the service may write: suppressions and members."""
        with open_store(self.config) as store:
            return self.suppressed(), [(m.email, m.status) for m in store.members()]

    def send(self, list_name: str) -> int:
        report = send_issue(
            self.config, self.root / SAMPLE, self.root / list_name, SendOptions(provider="outbox")
        )
        return report.sent

    def outbox(self) -> list[email.message.EmailMessage]:
        box = mailbox.Maildir(self.root / "outbox", factory=None, create=True)
        return [
            email.message_from_bytes(m.as_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for m in box
        ]

    def outbox_count(self) -> int:
        return sum(1 for _ in (self.root / "outbox" / "new").iterdir())

    def post_form(self, path: str, page: Answer, **fields: str) -> Answer:
        body = urllib.parse.urlencode({"csrf": page.form(), **fields}).encode()
        return self.server.request("POST", path, body, {**FORM, "Cookie": page.cookie()})


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    root = make_workspace(tmp_path_factory.mktemp("reader") / "ws")
    env = {"NEWSLETTER_SECRET": SECRET, "SENDGRID_WEBHOOK_PUBLIC_KEY": PUBLIC_KEY}
    with serving(root, env, lambda port: write_service_config(root, port)) as server:
        yield Reader(root, server, env)


def unsubscribe_link(message: email.message.EmailMessage) -> str:
    """The footer's link. (List-Unsubscribe carries https links only; the test server is
    http on 127.0.0.1, so its header has the mailto alone: the same token either way.)"""
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    found = re.search(r"Unsubscribe: (\S+)", text)
    assert found, text
    return found[1]


# --- the service's door: no premailer, no sendgrid ------------------------------------------

BLOCKED = textwrap.dedent(
    """
    import sys
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("premailer", "sendgrid", "python_http_client"):
                raise ImportError(f"{name} is blocked")
    sys.meta_path.insert(0, Blocker())
    from pathlib import Path
    from newsletter.config import load_config
    from newsletter.web.reader import create_app
    create_app(load_config(Path(sys.argv[1]), env={"NEWSLETTER_SECRET": "x" * 32}))
    assert not {"premailer", "sendgrid"} & set(sys.modules)
    print("ok")
    """
)


def test_the_service_imports_and_starts_without_premailer_or_sendgrid(reader: Reader) -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED, str(reader.root / "newsletter.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout == "ok\n", done.stderr


def test_favicon_ico_is_answered_not_404(reader: Reader) -> None:
    """Browsers ask every page's host for /favicon.ico; the service's pages get one."""
    with urllib.request.urlopen(reader.server.url + "/favicon.ico", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "image/vnd.microsoft.icon"
        assert answer.read() == favicon_ico()


# --- unsubscribe ----------------------------------------------------------------------------


def test_one_click_post_unsubscribes_at_once_and_the_next_send_skips_them(
    reader: Reader,
) -> None:
    (reader.root / "one-click.csv").write_text(readers(3, "one-click.example"))
    assert reader.send("one-click.csv") == 3
    [message] = [m for m in reader.outbox() if "reader00001@one-click.example" in str(m["To"])]
    link = unsubscribe_link(message)
    assert link.startswith(reader.server.url + "/unsubscribe?token=")
    answer = reader.server.request("POST", link, ONE_CLICK, FORM)
    assert answer.status == 200 and "Set-Cookie" not in answer.headers
    assert reader.suppressed()["reader00001@one-click.example"] == "unsubscribe"
    again = reader.server.request("POST", link, ONE_CLICK, FORM)  # a repeat is harmless
    assert again.status == 200
    (reader.root / "one-click.csv").write_text(readers(3, "one-click.example") + "new@x.example\n")
    assert reader.send("one-click.csv") == 1  # only the new reader: never the one who left


def test_one_click_as_multipart_form_data_too(reader: Reader) -> None:
    link = Signer(SECRET, LIST_ID).url(reader.server.url + "/unsubscribe", "multi@example.org")
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        b"One-Click\r\n--XyZ--\r\n"
    )
    answer = reader.server.request(
        "POST", link, body, {"Content-Type": "multipart/form-data; boundary=XyZ"}
    )
    assert answer.status == 200
    assert reader.suppressed()["multi@example.org"] == "unsubscribe"


def test_get_shows_a_button_and_never_unsubscribes(reader: Reader) -> None:
    link = Signer(SECRET, LIST_ID).url(reader.server.url + "/unsubscribe", "scanned@example.org")
    page = reader.server.request("GET", link)
    assert page.status == 200
    assert "scanned@example.org" in page.text and "<button" in page.text
    assert "scanned@example.org" not in reader.suppressed()
    done = reader.post_form(link, page)
    assert done.status == 200 and "You are unsubscribed" in done.text
    assert reader.suppressed()["scanned@example.org"] == "unsubscribe"
    undo = reader.post_form(done.text and _action(done), done)
    assert undo.status == 200 and "Welcome back" in undo.text
    assert "scanned@example.org" not in reader.suppressed()


def _action(page: Answer) -> str:
    found = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert found, page.text
    return found[1].replace("&amp;", "&")


def test_bad_unsubscribe_tokens_get_400_and_write_nothing(reader: Reader) -> None:
    good = Signer(SECRET, LIST_ID).token("victim@example.org")
    confirm = PurposeSigner(SECRET, LIST_ID, "confirm").token("nonce", expires=2**40)
    other_list = Signer(SECRET, "another.example.org").token("victim@example.org")
    forged = Signer("not-our-secret-0123456789", LIST_ID).token("victim@example.org")
    before = reader.state()
    for token in (good[:-3], good + "x", confirm, other_list, forged, "", "a.b"):
        path = "/unsubscribe?token=" + urllib.parse.quote(token)
        assert reader.server.request("GET", path).status == 400, token
        answer = reader.server.request("POST", path, ONE_CLICK, FORM)
        assert answer.status == 400 and "not valid" in answer.text
    assert reader.state() == before


def test_bad_requests_are_refused_with_4xx_and_write_nothing(reader: Reader) -> None:
    link = Signer(SECRET, LIST_ID).url(reader.server.url + "/unsubscribe", "bad@example.org")
    before = reader.state()
    huge = b"List-Unsubscribe=One-Click&pad=" + b"x" * 100_000
    assert reader.server.request("POST", link, huge, FORM).status == 413
    assert (
        reader.server.request("POST", link, ONE_CLICK, {"Content-Type": "text/plain"}).status == 415
    )
    no_csrf = reader.server.request("POST", link, b"csrf=forged", FORM)
    assert no_csrf.status == 403
    page = reader.server.request("GET", "/subscribe")
    stolen = reader.server.request(  # a token without the cookie it is bound to
        "POST",
        "/subscribe",
        urllib.parse.urlencode({"csrf": page.form(), "email": "a@b.org"}).encode(),
        FORM,
    )
    assert stolen.status == 403
    assert reader.server.request("POST", "/webhooks/sendgrid", b"[]", FORM).status == 415
    assert reader.state() == before


# --- subscribe, double opt-in ---------------------------------------------------------------


def test_a_signup_through_the_archive_form_confirms_and_gets_the_next_issue(
    reader: Reader,
) -> None:
    site = build_archive(reader.config, reader.root / "site", drafts=True)
    index = (site.out / "index.html").read_text()
    action = re.search(r'<form class="subscribe" method="get" action="([^"]+)"', index)
    assert action and action[1] == reader.server.url + "/subscribe"
    assert "Forwarded this? Subscribe at " + action[1] in _footer_of_a_sent_issue(reader)
    page = reader.server.request("GET", action[1] + "?email=new.reader%40example.org")
    assert 'value="new.reader@example.org"' in page.text
    asked = reader.post_form("/subscribe", page, email="new.reader@example.org", name="Nia")
    assert asked.status == 200 and "Check your inbox" in asked.text
    [mail] = [m for m in reader.outbox() if "new.reader@example.org" in str(m["To"])]
    assert mail["Subject"] == "Confirm your subscription to The Weekly Brief"
    link = re.search(r"http://\S+/confirm\?token=\S+", mail.get_content())
    assert link, mail.get_content()
    with open_store(reader.config) as store:
        assert store.member("new.reader@example.org").status == "pending"  # type: ignore[union-attr]
    confirm_page = reader.server.request("GET", link[0])
    assert confirm_page.status == 200 and "<button" in confirm_page.text
    with open_store(reader.config) as store:
        assert store.member("new.reader@example.org").status == "pending"  # type: ignore[union-attr]
    done = reader.post_form(link[0], confirm_page)
    assert done.status == 200 and "You are subscribed" in done.text
    with open_store(reader.config) as store:
        member = store.member("new.reader@example.org")
    assert member is not None and member.status == "subscribed" and member.name == "Nia"
    assert member.consent.asked_at and member.consent.confirmed_at
    assert member.consent.ip == "127.0.0.1" and "signup form" in member.consent.source
    before = reader.state()
    replay = reader.post_form(link[0], confirm_page)
    assert replay.status == 409 and reader.state() == before
    sent = subprocess.run(
        [sys.executable, "-m", "newsletter", "send", SAMPLE, "--yes", "--json"],
        cwd=reader.root,
        env={**reader.server.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    assert any(
        "new.reader@example.org" in str(m["To"]) and "North Korea" in str(m["Subject"])
        for m in reader.outbox()
    )


def _footer_of_a_sent_issue(reader: Reader) -> str:
    return (
        next(m for m in reader.outbox() if "North Korea" in str(m["Subject"]))
        .get_body(("plain",))
        .get_content()
    )  # type: ignore[union-attr]


def test_the_answer_is_the_same_whether_or_not_the_address_is_subscribed(
    reader: Reader,
) -> None:
    with open_store(reader.config) as store:
        from newsletter.storage.store import Member

        store.put_member(Member("already@example.org", name="Al"))
    answers = []
    for address in ("already@example.org", "unknown@example.org"):
        page = reader.server.request(
            "GET", "/subscribe", headers={"X-Forwarded-For": "198.51.100.7"}
        )
        answer = reader.post_form("/subscribe", page, email=address)
        answers.append((answer.status, answer.text))
    assert answers[0] == answers[1]
    with open_store(reader.config) as store:
        assert store.member("already@example.org").status == "subscribed"  # type: ignore[union-attr]


def test_a_filled_honeypot_writes_nothing_and_sends_nothing(reader: Reader) -> None:
    before, mails = reader.state(), reader.outbox_count()
    page = reader.server.request("GET", "/subscribe")
    answer = reader.post_form("/subscribe", page, email="bot@example.org", website="http://spam")
    assert answer.status == 200 and "Check your inbox" in answer.text
    assert reader.state() == before and reader.outbox_count() == mails


def test_a_flood_from_one_ip_is_refused_with_429(reader: Reader) -> None:
    page = reader.server.request("GET", "/subscribe")
    statuses = []
    for i in range(12):
        body = urllib.parse.urlencode({"csrf": page.form(), "email": f"flood{i}@example.org"})
        statuses.append(
            reader.server.request(
                "POST",
                "/subscribe",
                body.encode(),
                {**FORM, "Cookie": page.cookie(), "X-Forwarded-For": "203.0.113.66"},
            ).status
        )
    assert statuses[:10] == [200] * 10 and statuses[10:] == [429, 429]
    with open_store(reader.config) as store:
        assert store.member("flood11@example.org") is None


def test_a_forged_or_expired_confirm_token_is_refused(reader: Reader) -> None:
    signer = PurposeSigner(SECRET, LIST_ID, "confirm")
    expired = signer.token("nonce", expires=int(time.time()) - 1)
    unsubscribe = Signer(SECRET, LIST_ID).token("someone@example.org")
    csrf = PurposeSigner(SECRET, LIST_ID, "csrf").token("nonce", expires=2**40)
    for token in (expired, unsubscribe, csrf, signer.token("n", expires=2**40)[:-2]):
        assert reader.server.request("GET", "/confirm?token=" + token).status == 400


# --- SendGrid's event webhook ---------------------------------------------------------------


def signed(body: bytes, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = KEY.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


EVENTS = [
    {
        "email": "hard@example.org",
        "event": "bounce",
        "type": "bounce",
        "reason": "550 no such user",
        "issue": ISSUE_ID,
        "list": LIST_ID,
        "sg_event_id": "e1",
    },
    {"email": "soft@example.org", "event": "bounce", "type": "blocked", "reason": "421 try later"},
    {"email": "spam@example.org", "event": "spamreport", "issue": ISSUE_ID, "list": LIST_ID},
    {"email": "drop@example.org", "event": "dropped", "reason": "Bounced Address"},
    {"email": "kept@example.org", "event": "dropped", "reason": "Spam Content"},
    {"email": "left@example.org", "event": "group_unsubscribe", "asm_group_id": 1},
    {"email": "opened@example.org", "event": "open"},
]


def test_a_signed_webhook_batch_suppresses_with_the_issue_that_caused_it(reader: Reader) -> None:
    body = json.dumps(EVENTS).encode()
    unsigned = reader.server.request(
        "POST", "/webhooks/sendgrid", body, {"Content-Type": "application/json"}
    )
    assert unsigned.status == 401
    stale = reader.server.request(
        "POST", "/webhooks/sendgrid", body, signed(body, int(time.time()) - 3600)
    )
    assert stale.status == 400
    tampered = reader.server.request(
        "POST", "/webhooks/sendgrid", body.replace(b"hard", b"hart"), signed(body)
    )
    assert tampered.status == 403
    assert "hard@example.org" not in reader.suppressed()
    answer = reader.server.request("POST", "/webhooks/sendgrid", body, signed(body))
    assert answer.status == 200 and json.loads(answer.text) == {"suppressed": 4, "seen": 4}
    suppressed = reader.suppressed()
    assert {
        k: suppressed.get(k)
        for k in (
            "hard@example.org",
            "spam@example.org",
            "drop@example.org",
            "left@example.org",
            "soft@example.org",
            "kept@example.org",
            "opened@example.org",
        )
    } == {
        "hard@example.org": "bounce",
        "spam@example.org": "complaint",
        "drop@example.org": "bounce",
        "left@example.org": "unsubscribe",
        "soft@example.org": None,
        "kept@example.org": None,
        "opened@example.org": None,
    }
    status = subprocess.run(
        [sys.executable, "-m", "newsletter", "status", ISSUE_ID],
        cwd=reader.root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # the webhook's suppressions are the issue's after-send counts: the store is their source
    assert (
        "After the send, of 0 sent: 1 bounced (hard), 0 bounced (soft), 1 complained, "
        "0 unsubscribed" in " ".join(status.stdout.split())
    )
    as_json = subprocess.run(
        [sys.executable, "-m", "newsletter", "status", ISSUE_ID, "--json"],
        cwd=reader.root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    after_send = json.loads(as_json.stdout)["after_send"]
    assert (after_send["bounced_hard"], after_send["complained"]) == (1, 1)
    repeat = reader.server.request("POST", "/webhooks/sendgrid", body, signed(body))
    assert json.loads(repeat.text) == {"suppressed": 0, "seen": 4}


def test_a_cli_send_and_the_service_writing_at_the_same_moment_lose_nothing(
    reader: Reader,
) -> None:
    (reader.root / "busy.csv").write_text(readers(200, "busy.example"))
    send = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "send", SAMPLE, "--to", "busy.csv", "--yes", "--json"],
        cwd=reader.root,
        env=reader.server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    signer = Signer(SECRET, LIST_ID)
    statuses = []
    while send.poll() is None or len(statuses) < 40:  # all the while the send runs
        i = len(statuses)
        link = signer.url(reader.server.url + "/unsubscribe", f"busy{i}@elsewhere.example")
        ip = {"X-Forwarded-For": f"10.9.{i // 50}.{i % 50}"}  # many readers, not a flood
        statuses.append(reader.server.request("POST", link, ONE_CLICK, {**FORM, **ip}).status)
    out, err = send.communicate(timeout=120)
    assert send.returncode == 0, err
    assert json.loads(out)["sent"] == 200
    assert statuses == [200] * len(statuses)
    suppressed = reader.suppressed()
    assert all(
        suppressed.get(f"busy{i}@elsewhere.example") == "unsubscribe" for i in range(len(statuses))
    )
    with open_store(reader.config) as store:
        assert store.ledger().counts(ISSUE_ID, rehearsal=True)["sent"] >= 200


def test_one_inbox_gets_at_most_three_confirmations_an_hour(reader: Reader) -> None:
    statuses, mails = [], reader.outbox_count()
    for i in range(4):  # from four networks: the limit is the address's
        ip = {"X-Forwarded-For": f"192.0.2.{i + 10}"}
        page = reader.server.request("GET", "/subscribe", headers=ip)
        body = urllib.parse.urlencode({"csrf": page.form(), "email": "Pat@Example.org"}).encode()
        answer = reader.server.request(
            "POST", "/subscribe", body, {**FORM, **ip, "Cookie": page.cookie()}
        )
        statuses.append(answer.status)
    assert statuses == [200, 200, 200, 429]
    assert reader.outbox_count() == mails + 3


def test_no_secret_or_token_reaches_the_service_log(reader: Reader) -> None:
    """Runs last in the module: by now every route has been used, refused and flooded."""
    link = Signer(SECRET, LIST_ID).url(reader.server.url + "/unsubscribe", "log@example.org")
    assert reader.server.request("GET", link).status == 200
    log = reader.server.log.read_text()
    assert SECRET not in log and "token=" not in log and PUBLIC_KEY not in log
