"""Signed per-recipient return paths (VERP): made for one recipient and issue, read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.errors import ConfigError
from newsletter.lists.verp import VerpResolver, envelope_sender
from tests.bouncing import make_ws, send
from tests.sending import ISSUE_ID


def test_without_verp_the_return_path_is_the_bounce_address_or_the_sender(
    tmp_path: Path,
) -> None:
    plain = make_ws(tmp_path / "a", extra="")
    assert envelope_sender(plain, "ada@example.com", ISSUE_ID) == "brief@example.org"
    box = make_ws(tmp_path / "b", extra="\nbounces:\n  address: bounces@news.example.org\n")
    assert envelope_sender(box, "ada@example.com", ISSUE_ID) == "bounces@news.example.org"


def test_a_signed_return_path_fits_a_local_part_and_names_the_issue(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws")
    sender = envelope_sender(cfg, "ada@example.com", ISSUE_ID)
    local, _, domain = sender.rpartition("@")
    assert domain == "news.example.org"
    assert local.startswith("bounces+") and local.endswith(f"-{ISSUE_ID}")
    assert len(local) <= 64 and local == local.lower()
    assert sender == envelope_sender(cfg, "ada@example.com", ISSUE_ID)
    assert sender != envelope_sender(cfg, "bob@example.com", ISSUE_ID)
    assert sender != envelope_sender(cfg, "ada@example.com", "2025-08-08-other")
    long_issue = "2025-08-01-" + "a-very-long-title-that-goes-on" * 4
    assert len(envelope_sender(cfg, "ada@example.com", long_issue).rpartition("@")[0]) <= 64


def test_it_is_read_back_even_when_an_mta_changes_its_case(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    sender = envelope_sender(cfg, "reader4@example.com", ISSUE_ID)
    resolver = VerpResolver(cfg)
    assert resolver.resolve(["someone@else.example", sender]) == ("reader4@example.com", ISSUE_ID)
    assert resolver.resolve([sender.upper()]) == ("reader4@example.com", ISSUE_ID)
    assert resolver.resolve(["bounces@news.example.org"]) is None


def test_a_return_path_made_under_another_secret_names_no_one(tmp_path: Path) -> None:
    cfg = make_ws(tmp_path / "ws")
    send(cfg)
    other = load_config(cfg.path, env={"NEWSLETTER_SECRET": "another-secret-0123456789abcdef"})
    forged = envelope_sender(other, "reader4@example.com", ISSUE_ID)
    assert VerpResolver(cfg).resolve([forged]) is None


def test_verp_without_the_secret_is_a_config_error(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws")
    cfg = load_config(ws.path, env={})
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET must be set"):
        envelope_sender(cfg, "ada@example.com", ISSUE_ID)
