"""`newsletter render` writes each file whole or not at all: a place it cannot write is a
message and an exit code, never a traceback, and a write that fails half way leaves the
previous render whole and no temporary file beside it."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.commands import assert_clean_exit, bare_workspace, cli, said
from tests.workspace import SAMPLE


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return bare_workspace(tmp_path / "ws", monkeypatch)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_render_into_a_path_under_a_file_is_refused_and_writes_nothing(ws: Path) -> None:
    (ws / "a-file").write_text("not a folder")
    result = cli("render", SAMPLE, "--out", "a-file/build")
    assert_clean_exit(result, 2)
    assert "a-file/build: cannot write here (Not a directory); choose another --out" in said(result)
    assert (ws / "a-file").read_text() == "not a folder"


def test_a_target_that_cannot_be_replaced_is_an_error_not_a_traceback(ws: Path) -> None:
    (ws / "build" / "2025-08-01-north-korea.html").mkdir(parents=True)
    result = cli("render", SAMPLE)
    assert_clean_exit(result, 2)
    assert "build/2025-08-01-north-korea.html: cannot write it (Is a directory)" in said(result)
    assert leftovers(ws / "build") == ["2025-08-01-north-korea.html"]  # no temp file left


def _limit_file_size() -> None:
    """In the child: files may not grow past 8 KB (as on a full disk, but only for it)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails with EFBIG instead


def test_a_write_that_fails_half_way_leaves_the_old_file_whole_and_no_temp_file(ws: Path) -> None:
    assert cli("render", SAMPLE).exit_code == 0
    before = {name: (ws / "build" / name).read_bytes() for name in leftovers(ws / "build")}
    (ws / "issues" / "2025-08-01-north-korea.yaml").write_text(
        (ws / SAMPLE).read_text().replace("North Korea", "North Korea, again")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "newsletter", "render", SAMPLE],
        cwd=ws,
        capture_output=True,
        preexec_fn=_limit_file_size,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert b"2025-08-01-north-korea.html: cannot write it (File too large)" in proc.stderr
    assert b"Traceback" not in proc.stderr
    after = {name: (ws / "build" / name).read_bytes() for name in leftovers(ws / "build")}
    assert after == before  # the previous render, whole; no .tmp beside it
