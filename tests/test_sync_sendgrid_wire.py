"""`sync sendgrid` keeps the API key to the API host, as the SendGrid provider does: no
redirect is followed with it, and plain http:// is refused unless it is this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.errors import ConfigError, PermanentProviderError
from newsletter.lists.sendgrid_sync import sync_sendgrid
from newsletter.lists.suppressions import CsvSuppressions
from newsletter.storage.bounces import open_state
from tests.bouncing import make_ws
from tests.sending import config
from tests.servers.sendgrid import TEST_API_KEY, SendGridServer, redirect


@pytest.mark.parametrize("code", [302, 307])
def test_a_redirect_is_not_followed_with_the_key(
    tmp_path: Path, sendgrid_server: SendGridServer, code: int
) -> None:
    cfg = make_ws(tmp_path / "ws")
    env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": sendgrid_server.url}
    with SendGridServer(TEST_API_KEY) as elsewhere:
        sendgrid_server.inject(redirect(f"http://localhost:{elsewhere.port}/v3/x", code))
        with open_state(cfg.state_dir) as state, pytest.raises(PermanentProviderError) as info:
            sync_sendgrid(
                config(cfg.root, env),
                sink=CsvSuppressions(cfg.suppressions_path),
                state=state,
                sleep=lambda _: None,
            )
        assert elsewhere.requests == 0  # the key never went there
    message = str(info.value)
    assert str(code) in message and "SENDGRID_API_HOST" in message
    assert TEST_API_KEY not in message
    assert not cfg.suppressions_path.exists()


def test_plain_http_to_another_host_is_refused_before_any_request(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws")
    env = {"SENDGRID_API_KEY": TEST_API_KEY, "SENDGRID_API_HOST": "http://api.example.com"}
    with open_state(cfg.state_dir) as state, pytest.raises(ConfigError, match="unencrypted"):
        sync_sendgrid(
            config(cfg.root, env), sink=CsvSuppressions(cfg.suppressions_path), state=state
        )
