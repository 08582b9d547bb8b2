"""Secrets: a key or password that cannot be sent as it is is refused before anything leaves,
and no form of a secret on the wire (raw, base64 as in SMTP AUTH, URL-encoded, JSON-escaped)
reaches the terminal, --json or the ledger, however the text around it was cut."""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import redact
from newsletter.delivery.providers.smtp import smtp_server
from newsletter.delivery.send import SendOptions, send_issue
from newsletter.errors import ConfigError
from newsletter.storage.ledger import Ledger
from tests.sending import ISSUE_ID, SECRET, config, workspace
from tests.servers.sendgrid import SendGridServer, status
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
    from tests.servers.smtp import SMTPServer

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
