"""Suppressions match readers as a send does (`address_key`: lowercased, never case-folded),
and what the tool prints of them as CSV is neutralised like every CSV it writes."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.lists.suppressions import CsvSuppressions, read_suppressions, remove_suppression
from tests.bouncing import make_ws


def test_strasse_is_not_strasse_with_an_eszett(tmp_path: Path) -> None:
    sink = CsvSuppressions(tmp_path / "suppressions.csv")
    assert sink.suppress("straße@example.com", "hard bounce", source="test")
    assert not sink.suppress("STRAßE@example.com", "hard bounce", source="test")
    assert sink.suppress("strasse@example.com", "hard bounce", source="test")
    sink.flush()
    emails = {r.email for r in read_suppressions(tmp_path / "suppressions.csv")}
    assert emails == {"straße@example.com", "strasse@example.com"}


def test_a_formula_address_is_exported_neutralised_and_removed_by_its_own_text(
    tmp_path: Path,
) -> None:
    cfg = make_ws(tmp_path / "ws")
    sink = CsvSuppressions(cfg.suppressions_path)
    assert sink.suppress("=cmd@example.com", "spam complaint", source="test")
    sink.flush()
    # read back as it was written, without the guarding quote
    assert [r.email for r in read_suppressions(cfg.suppressions_path)] == ["=cmd@example.com"]

    config_path = str(cfg.root / "newsletter.yaml")
    result = CliRunner().invoke(app, ["--config", config_path, "suppressions", "--csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["email", "reason", "added_at"]
    assert rows[1][0] == "'=cmd@example.com"

    removal = remove_suppression(cfg, "=CMD@example.com", why="test")
    assert removal.rows == 1
    assert list(read_suppressions(cfg.suppressions_path)) == []
