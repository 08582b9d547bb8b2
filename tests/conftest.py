"""Fixtures for every test module. The servers themselves live in tests/servers/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.sendgrid import TEST_API_KEY, SendGridServer
from tests.servers.smtp import SMTPServer


@pytest.fixture
def sendgrid_server() -> Iterator[SendGridServer]:
    """SendGrid's mail send on 127.0.0.1: `SendGridAPIClient(server.api_key, host=server.url)`."""
    with SendGridServer(TEST_API_KEY) as server:
        yield server


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """An SMTP server on `server.host`:`server.port`, no AUTH, storing `server.messages`."""
    with SMTPServer() as server:
        yield server
