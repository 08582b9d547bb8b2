"""`newsletter suppressions` speaks for the one store: whatever wrote a suppression (the
bounce mailbox, the reader service, `unsubscribe`) it is listed there, and a removal lifts
it where every send looks, so the reader is mailed again."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import load_config
from newsletter.lists.suppressions import open_sink
from newsletter.storage.store import Suppression, open_store
from tests.workspace import make_workspace

runner = CliRunner()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_workspace(tmp_path / "ws")
    monkeypatch.chdir(root)
    return root


def test_a_bounce_goes_to_the_store_with_its_kind_and_issue(ws: Path) -> None:
    cfg = load_config(ws / "newsletter.yaml", env={})
    sink = open_sink(cfg)
    assert sink.suppress("gone@example.com", "hard bounce", source="mailbox", issue="2025-08-01-x")
    assert sink.suppress("grumpy@example.com", "spam complaint", source="sendgrid")
    assert not sink.suppress("GONE@example.com", "hard bounce", source="mailbox")
    sink.flush()
    with open_store(cfg) as store:
        gone = store.suppression("gone@example.com")
        grumpy = store.suppression("grumpy@example.com")
    assert gone is not None and (gone.kind, gone.issue) == ("bounce", "2025-08-01-x")
    assert grumpy is not None and grumpy.kind == "complaint"
    assert not open_sink(cfg).suppress("gone@example.com", "hard bounce", source="mailbox")


def test_what_the_service_wrote_is_listed_and_a_removal_lifts_it(ws: Path) -> None:
    cfg = load_config(ws / "newsletter.yaml", env={})
    with open_store(cfg) as store:
        store.suppress([Suppression("ada@example.com", "one-click", "unsubscribe", "service")])
    listed = runner.invoke(app, ["suppressions"])
    assert listed.exit_code == 0, listed.output
    assert "ada@example.com  one-click" in listed.output
    removed = runner.invoke(app, ["suppressions", "remove", "ada@example.com", "--why", "asked"])
    assert removed.exit_code == 0, removed.output
    with open_store(cfg) as store:
        assert store.suppression("ada@example.com") is None
    assert "0 addresses suppressed" in runner.invoke(app, ["suppressions"]).output
