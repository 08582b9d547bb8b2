"""The wheel a user installs holds every module and template the repository has."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_WHEEL = "import importlib, sys; importlib.import_module(sys.argv[1]).build_wheel(sys.argv[2])"


def test_the_built_wheel_holds_every_module_and_template(tmp_path: Path) -> None:
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["build-backend"]
    # The build backend itself (PEP 517's build_wheel), as `pip wheel --no-build-isolation`
    # calls it, without pip's own second or two of start-up.
    subprocess.run(
        [sys.executable, "-c", BUILD_WHEEL, backend, str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("newsletter-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "newsletter"
    wanted = {
        p.relative_to(ROOT).as_posix()
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    missing = sorted(wanted - names)
    assert missing == [], f"left out of the wheel: {missing}"
