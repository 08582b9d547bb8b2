"""The API key goes to the API host and nowhere else: no redirect is followed with it, and a
plain http:// host is refused unless it is this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.delivery.providers.sendgrid import sendgrid_account
from newsletter.delivery.send import SendOptions, send_issue
from newsletter.errors import ConfigError, SendStopped
from newsletter.storage.ledger import Ledger
from tests.sending import ISSUE_ID, config, workspace
from tests.servers.sendgrid import SendGridServer, redirect
from tests.workspace import SAMPLE


@pytest.mark.parametrize("code", [302, 307, 308])  # 307/308 would re-POST the body as well
def test_a_redirect_is_not_followed_with_the_key_and_nobody_is_left_unknown(
    tmp_path: Path, sendgrid_server: SendGridServer, code: int
) -> None:
    ws = workspace(tmp_path / "ws", 3)
    with SendGridServer(sendgrid_server.api_key) as elsewhere:
        sendgrid_server.inject(redirect(f"http://localhost:{elsewhere.port}/v3/mail/send", code))
        env = {
            "SENDGRID_API_KEY": sendgrid_server.api_key,
            "SENDGRID_API_HOST": sendgrid_server.url,
        }
        options = SendOptions(provider="sendgrid", backoff=0.0, max_backoff=0.0)
        with pytest.raises(SendStopped) as info:
            send_issue(config(ws, env), ws / SAMPLE, ws / "list.csv", options)
        assert elsewhere.requests == 0  # the key never went there
    message = str(info.value)
    assert str(code) in message and f"localhost:{elsewhere.port}" in message
    assert "SENDGRID_API_HOST" in message  # what to do
    assert sendgrid_server.api_key not in message
    report = info.value.report
    assert (report.sent, report.unknown, report.failed) == (0, 0, 3)
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert ledger.counts(ISSUE_ID) == {"failed": 3}


@pytest.mark.parametrize(
    "host",
    [
        "http://127.0.0.1:8025",
        "http://127.8.9.1",
        "http://localhost:1234",
        "http://[::1]:99",
        "https://api.sendgrid.com",
    ],
)
def test_https_or_loopback_http_hosts_are_taken(tmp_path: Path, host: str) -> None:
    ws = workspace(tmp_path / "ws", 0)
    account = sendgrid_account(config(ws, {"SENDGRID_API_KEY": "SG.k", "SENDGRID_API_HOST": host}))
    assert account.host == host


@pytest.mark.parametrize(
    "host", ["http://api.sendgrid.com", "http://10.0.0.8:8080", "http://127.0.0.1.example.com"]
)
def test_a_plain_http_host_elsewhere_is_refused(tmp_path: Path, host: str) -> None:
    ws = workspace(tmp_path / "ws", 0)
    with pytest.raises(ConfigError) as info:
        sendgrid_account(config(ws, {"SENDGRID_API_KEY": "SG.k", "SENDGRID_API_HOST": host}))
    assert "https://" in str(info.value) and "SENDGRID_API_HOST" in str(info.value)
