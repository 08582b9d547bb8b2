"""Secrets: a key or password that cannot be sent as it is is refused before anything leaves,
and no form of a secret on the wire (raw, base64 as in SMTP AUTH, URL-encoded, JSON-escaped)
reaches the terminal, --json or the ledger, however the text around it was cut."""

from __future__ import annotations

import base64
import json
import random
import urllib.parse
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import load_config, redact
from newsletter.delivery.providers.smtp import smtp_server
from newsletter.delivery.send import SendOptions, send_issue
from newsletter.errors import ConfigError
from newsletter.storage.ledger import Ledger
from newsletter.storage.store import open_store
from tests.commands import (
    assert_clean_exit,
    bare_workspace,
    cli,
    files_under,
    free_port,
    said,
    smtp_env,
    start_send,
)
from tests.sending import ISSUE_ID, SECRET, config, workspace
from tests.servers.sendgrid import SendGridServer, status
from tests.servers.smtp import SMTPServer, reply
from tests.workspace import SAMPLE

#: As long as a real SendGrid key, with the characters that each encoding changes.
KEY = 'SG.q7/Vb+Ta"Rk\\pX?w=1&y=2%zz.' + "Lm0Np1Qr2St3Uv4Wx5Yz6Ab7Cd8Ef9Gh0Ij1Kl2Mn"


def forms(secret: str, user: str = "editor") -> list[str]:
    """How a secret travels: as is, base64 (and in SMTP AUTH PLAIN), URL- and JSON-encoded."""
    plain = base64.b64encode(f"\0{user}\0{secret}".encode()).decode()
    return [
        secret,
        base64.b64encode(secret.encode()).decode(),
        plain[len(user) + 4 :],  # past the part that encodes only the user
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
    ]


def leaked(text: str, secret: str) -> list[str]:
    """Every 12-character piece of any form of the secret found in `text`."""
    return [
        form[i : i + 12]
        for form in forms(secret)
        for i in range(len(form) - 11)
        if form[i : i + 12] in text
    ]


def send_args(ws: Path, *extra: str) -> list[str]:
    where = ["--config", str(ws / "newsletter.yaml"), "send", str(ws / SAMPLE)]
    return [*where, "--to", str(ws / "list.csv"), "-p", "sendgrid", "--yes", *extra]


@pytest.mark.parametrize(
    "bad",
    [KEY + "\n", KEY + "\r\n", KEY + " ", "\t" + KEY, KEY[:20] + "\n" + KEY[20:], KEY + "\x07"],
)
def test_a_key_with_a_line_break_control_or_space_is_refused_before_any_request(
    tmp_path: Path, bad: str
) -> None:
    ws = workspace(tmp_path / "ws", 3)
    with SendGridServer(bad.strip()) as server:
        env = {"SENDGRID_API_KEY": bad, "SENDGRID_API_HOST": server.url}
        with pytest.raises(ConfigError) as info:
            send_issue(config(ws, env), ws / SAMPLE, ws / "list.csv", SendOptions("sendgrid"))
        assert server.requests == 0
        message = str(info.value)
        assert "SENDGRID_API_KEY" in message and leaked(message, KEY) == []
        with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
            assert ledger.counts(ISSUE_ID) == {}  # nobody unknown: nothing left

        result = CliRunner().invoke(
            app,
            send_args(ws),
            env={**env, "NEWSLETTER_SECRET": SECRET},
        )
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output and leaked(result.output, KEY) == []
        assert server.requests == 0


@pytest.mark.parametrize("bad", ["pa55word\n", "pa55word\r", " pa55word", "pa\x1b[2Jss"])
def test_an_smtp_password_with_a_line_break_control_or_space_is_refused(
    tmp_path: Path, bad: str
) -> None:
    ws = workspace(tmp_path / "ws", 0)
    with pytest.raises(ConfigError) as info:
        smtp_server(config(ws, {"SMTP_PASSWORD": bad, "SMTP_USER": "editor"}))
    assert "SMTP_PASSWORD" in str(info.value) and "pa55" not in str(info.value)


def test_every_wire_form_is_redacted_and_before_any_cut() -> None:
    text = " ".join(forms(KEY))
    assert leaked(redact(text, [KEY]), KEY) == []
    cut = ("x" * 20 + KEY)[:40]  # redaction that came after a cut still catches what is left
    assert KEY[:12] not in redact(cut, [KEY])


def test_a_server_echoing_the_key_shows_it_nowhere(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 3)
    echo = " ".join(forms(KEY))
    # not JSON: shown shortened; the key straddles the cut at 300 characters
    page = ("Bad Request. " + "x" * 270 + " you sent: " + echo).encode()
    with SendGridServer(KEY) as server:
        env = {
            "SENDGRID_API_KEY": KEY,
            "SENDGRID_API_HOST": server.url,
            "NEWSLETTER_SECRET": SECRET,
        }
        outputs = []
        for extra in ([], ["--json"]):
            server.inject(status(400, body=page))
            server.inject(status(400, message=f"invalid key {echo}"))
            for _ in range(2):
                result = CliRunner().invoke(
                    app,
                    send_args(ws, *extra),
                    env=env,
                )
                assert result.exit_code == 3, result.output
                assert "SendGrid refused the request (400)" in result.output
                outputs.append(result.output)
    assert [leaked(output, KEY) for output in outputs] == [[], [], [], []]
    ledger = (ws / ".newsletter" / "ledger.sqlite").read_bytes().decode("utf-8", "replace")
    assert leaked(ledger, KEY) == []


def test_an_smtp_send_with_such_a_password_connects_to_nobody(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 3)
    with SMTPServer(username="editor", password="pa55word") as server:
        env = {
            "SMTP_HOST": server.host,
            "SMTP_PORT": str(server.port),
            "SMTP_SECURITY": "none",
            "SMTP_USER": "editor",
            "SMTP_PASSWORD": "pa55word\r\n",
        }
        with pytest.raises(ConfigError) as info:
            send_issue(config(ws, env), ws / SAMPLE, ws / "list.csv", SendOptions("smtp"))
        assert server.connections == 0
    assert "SMTP_PASSWORD" in str(info.value) and "pa55word" not in str(info.value)
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {}


# --- whatever a server echoes: never in output, reports, ledgers or messages ----------------

# Fake secrets, distinctive enough that finding one anywhere means it leaked.
API_KEY = "SG.leak-check-api-key-7Qx9Vb2LmN4pR8sT"
PASSWORD = "smtp-pass-Zq3Wv8Jk1Hn6-leak-check"
TOKEN_SECRET = "token-secret-Yt5Ub9Ic2Od7Pe4Rf0"
SECRETS = (API_KEY, PASSWORD, TOKEN_SECRET)


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return bare_workspace(tmp_path / "ws", monkeypatch)


def assert_no_secret(*texts: str | bytes, root: Path | None = None) -> None:
    """No secret in what was printed, nor in any file the workspace holds (ledger included)."""
    blobs = [t.encode() if isinstance(t, str) else t for t in texts]
    if root is not None:
        blobs += [p.read_bytes() for p in files_under(root)]
    for secret in SECRETS:
        assert not any(secret.encode() in blob for blob in blobs), f"{secret} leaked"


def sg_env(server: SendGridServer, key: str = API_KEY) -> dict[str, str]:
    return {
        "SENDGRID_API_KEY": key,
        "SENDGRID_API_HOST": server.url,
        "NEWSLETTER_SECRET": TOKEN_SECRET,
    }


def smtp_env_with(port: int, **extra: str) -> dict[str, str]:
    return smtp_env(port, NEWSLETTER_SECRET=TOKEN_SECRET, **extra)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process CLI runs retry at once (the jitter is random.uniform(0, ceiling))."""
    monkeypatch.setattr(random, "uniform", lambda a, b: 0.0)


ECHO = f"you sent {API_KEY} with {TOKEN_SECRET} and {PASSWORD}"
SMTP_ECHO = f"you sent {PASSWORD} with {TOKEN_SECRET}"  # what an SMTP sender knows


def test_sendgrid_errors_that_echo_secrets_leak_nothing(ws: Path, no_backoff: None) -> None:
    with SendGridServer(API_KEY) as server:
        env = {**sg_env(server), "SMTP_PASSWORD": PASSWORD}
        outputs = []
        for faults in (
            [status(500, message=ECHO), status(400, message=ECHO)],  # retried, then refused
            [status(429, message=ECHO, retry_after=0)] * 6,  # given up after 6 tries
            [status(401, message=ECHO)],
        ):
            for extra in ([], ["--json"]):
                server.inject(*faults)
                result = cli(
                    "send", SAMPLE, "--to", "list.csv", "--yes", "-p", "sendgrid", *extra, env=env
                )
                assert_clean_exit(result, 3)
                outputs.append(result.output)
        wrong = cli(
            "send",
            SAMPLE,
            "--to",
            "list.csv",
            "--yes",
            "-p",
            "sendgrid",
            "--json",
            env={**sg_env(server, key="SG.wrong-" + API_KEY)},
        )
        assert_clean_exit(wrong, 3)
        assert "check SENDGRID_API_KEY" in said(wrong)
    assert any(
        "SendGrid refused the request (400): you sent" in " ".join(o.split()) for o in outputs
    )
    assert_no_secret(*outputs, wrong.output, root=ws)
    assert "wrong-" not in wrong.output


def test_an_unreachable_sendgrid_leaks_nothing(ws: Path, no_backoff: None) -> None:
    env = {
        "SENDGRID_API_KEY": API_KEY,
        "SENDGRID_API_HOST": f"http://127.0.0.1:{free_port()}",
        "NEWSLETTER_SECRET": TOKEN_SECRET,
    }
    result = cli("send", SAMPLE, "--to", "list.csv", "--yes", "-p", "sendgrid", "--json", env=env)
    assert_clean_exit(result, 3)
    report = json.loads(result.stdout)
    assert report["failed"] == 5 and "cannot reach SendGrid" in report["stopped"]
    assert_no_secret(result.output, root=ws)


def test_a_real_process_prints_no_secret_on_a_provider_error(ws: Path) -> None:
    with SendGridServer(API_KEY) as server:
        server.inject(status(400, message=ECHO))
        proc = start_send(
            ws, {**sg_env(server), "SMTP_PASSWORD": PASSWORD}, "-p", "sendgrid", "--json"
        )
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert json.loads(out)["failed"] == 5
    assert b"SendGrid refused the request (400)" in err
    assert_no_secret(out, err, root=ws)


def test_a_smtp_login_failure_and_a_refused_connection_leak_nothing(
    ws: Path, no_backoff: None
) -> None:
    with SMTPServer(username="mailer", password="the-right-one-0123") as server:
        env = smtp_env_with(server.port, SMTP_USER="mailer", SMTP_PASSWORD=PASSWORD)
        login = cli("send", SAMPLE, "--to", "list.csv", "--yes", "-p", "smtp", "--json", env=env)
    assert_clean_exit(login, 3)
    assert "refused the login for 'mailer'" in said(login)
    refused = cli(
        "send",
        SAMPLE,
        "--to",
        "list.csv",
        "--yes",
        "-p",
        "smtp",
        env=smtp_env_with(free_port(), SMTP_USER="mailer", SMTP_PASSWORD=PASSWORD),
    )
    assert_clean_exit(refused, 3)
    assert "cannot connect to the SMTP server 127.0.0.1:" in said(refused)
    assert_no_secret(login.output, refused.output, root=ws)


def test_a_smtp_reply_that_echoes_secrets_leaks_nothing(ws: Path) -> None:
    with SMTPServer(username="mailer", password=PASSWORD) as server:
        server.inject(reply(554, f"5.7.1 rejected: {SMTP_ECHO}", at="DATA"))
        env = smtp_env_with(server.port, SMTP_USER="mailer", SMTP_PASSWORD=PASSWORD)
        result = cli("send", SAMPLE, "--to", "list.csv", "--yes", "-p", "smtp", env=env)
    assert_clean_exit(result, 3)
    assert "554 5.7.1 rejected: you sent" in said(result)
    assert_no_secret(result.output, root=ws)


def test_a_smtp_refusal_that_echoes_secrets_leaks_nothing_into_ledger_or_suppressions(
    tmp_path: Path,
) -> None:
    ws = workspace(tmp_path / "ws", 3)
    with SMTPServer(username="mailer", password=PASSWORD) as server:
        server.reject("reader00001@example.com", 550, f"5.1.1 no such user ({SMTP_ECHO})")
        env = smtp_env_with(server.port, SMTP_USER="mailer", SMTP_PASSWORD=PASSWORD)
        report = send_issue(
            load_config(ws / "newsletter.yaml", env=env),
            ws / SAMPLE,
            ws / "list.csv",
            SendOptions(provider="smtp"),
        )
    assert (report.sent, report.rejected) == (2, 1)
    with open_store(load_config(ws / "newsletter.yaml", env=env)) as store:
        suppressed = store.suppression("reader00001@example.com")
    assert suppressed is not None and suppressed.reason.startswith("550 5.1.1 no such user")
    assert_no_secret(root=ws)
