"""The provider seam: every provider is known by its declaration, never by its name."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import secrets, settings_model
from newsletter.delivery.providers import PROVIDERS
from newsletter.errors import ConfigError
from tests.sending import config, workspace


def test_each_provider_is_registered_under_its_own_name_in_order() -> None:
    assert list(PROVIDERS) == ["outbox", "smtp", "sendgrid"]
    assert all(name == spec.name for name, spec in PROVIDERS.items())


def test_each_provider_settings_are_a_section_of_newsletter_yaml() -> None:
    fields = settings_model().model_fields
    for name, spec in PROVIDERS.items():
        if spec.settings is not None:
            assert fields[name].annotation is spec.settings


def test_every_secret_a_provider_declares_is_scrubbed(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 0)
    env = {n: f"value-of-{n}" for spec in PROVIDERS.values() for n in spec.secret_names}
    assert set(env) == {"SMTP_PASSWORD", "SENDGRID_API_KEY"}
    assert set(env.values()) <= set(secrets(config(ws, env)))


def test_a_provider_section_given_for_another_is_still_checked(tmp_path: Path) -> None:
    """A typo in `sendgrid:` is an error even when the provider is the outbox."""
    ws = workspace(tmp_path / "ws", 0, "sendgrid:\n  batch_sise: 10\n")
    with pytest.raises(ConfigError, match=r"newsletter\.yaml:\d+: sendgrid\.batch_sise: unknown"):
        config(ws, {})
