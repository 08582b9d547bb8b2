"""The sample issue's rendered HTML and text, compared with committed golden files.

A template change shows up as a reviewable diff of tests/golden/. After a deliberate
change, regenerate them with `make golden` (NEWSLETTER_UPDATE_GOLDEN=1).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from tests.workspace import SAMPLE, make_workspace

GOLDEN = Path(__file__).parent / "golden"
STEM = "2025-08-01-north-korea"


def normalise(text: str) -> str:
    """Tokens are signed with a local secret, but say so: the diff should show template changes."""
    return re.sub(r"token=[A-Za-z0-9_.%-]+", "token=TOKEN", text)


@pytest.mark.parametrize("suffix", ["html", "txt"])
def test_sample_matches_golden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    ws = make_workspace(tmp_path / "ws")
    monkeypatch.chdir(ws)
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    result = CliRunner().invoke(app, ["render", SAMPLE])
    assert result.exit_code == 0, result.output
    actual = normalise((ws / "build" / f"{STEM}.{suffix}").read_text(encoding="utf-8"))
    golden = GOLDEN / f"{STEM}.{suffix}"
    if os.environ.get("NEWSLETTER_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
    assert golden.is_file(), "no golden file yet: run `make golden`"
    assert actual == golden.read_text(encoding="utf-8"), (
        f"{golden.name} differs from the rendered sample; if the change is deliberate, "
        "run `make golden` and review the diff"
    )
