"""The sample issue, as the outbox writes it, scores 0.0 in SpamAssassin (Debian's package).

SpamAssassin runs offline here (-L: no DNS or network tests), so its score depends on the
message alone: the rules that fire are about our headers and HTML. CI installs it with
`apt-get install spamassassin`; the test fails, not skips, if it is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.cli import app
from tests.workspace import SAMPLE, make_workspace

SPAMASSASSIN = shutil.which("spamassassin") or "/usr/bin/spamassassin"


def test_the_sample_scores_zero_in_spamassassin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Path(SPAMASSASSIN).is_file(), "install SpamAssassin: apt-get install spamassassin"
    ws = make_workspace(tmp_path / "ws")
    (ws / "list.csv").write_text(
        "email,name,first_name\nkj@example.com,Katherine Johnson,Katherine\n"
    )
    monkeypatch.chdir(ws)
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    result = CliRunner().invoke(app, ["send", SAMPLE, "--to", "list.csv", "--yes"])
    assert result.exit_code == 0, result.output
    (message,) = (ws / "outbox" / "new").iterdir()
    home = tmp_path / "home"  # SpamAssassin writes its user preferences there
    home.mkdir()
    report = subprocess.run(
        [SPAMASSASSIN, "-L", "-t"],
        input=message.read_bytes(),
        capture_output=True,
        timeout=60,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout.decode("utf-8", "replace")
    score = re.search(r"Content analysis details:\s+\((-?[\d.]+) points", report)
    assert score is not None, report[-2000:]
    hits = re.findall(r"^\s*(-?\d+\.\d+) (\w+)", report, re.M)
    assert float(score.group(1)) <= 0.0, [h for h in hits if float(h[0]) > 0]
