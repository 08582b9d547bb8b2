"""Benchmark: load + render + inline the sample issue, and a whole `newsletter render` process.

Run by hand from the repository root: `.venv/bin/python bench/render.py`. Prints medians
of several runs measured side by side in one run; numbers go in docs/benchmarks.md.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = "issues/2025-08-01-north-korea.yaml"
NEWSLETTER = Path(sys.executable).with_name("newsletter")


def workspace() -> Path:
    root = Path(tempfile.mkdtemp(prefix="bench-render-"))
    (root / "issues").mkdir()
    shutil.copy(REPO / SAMPLE, root / SAMPLE)
    shutil.copy(REPO / "newsletter.yaml", root / "newsletter.yaml")
    return root


def in_process(root: Path, runs: int) -> list[float]:
    from newsletter.config import load_config
    from newsletter.content.issue import load_issue
    from newsletter.content.render import render_issue

    config = load_config(root / "newsletter.yaml")
    render_issue(load_issue(root / SAMPLE), config)  # warm: imports, template compilation
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        render_issue(load_issue(root / SAMPLE), config)
        times.append(time.perf_counter() - start)
    return times


def whole_process(root: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [str(NEWSLETTER), "render", SAMPLE], cwd=root, check=True, stdout=subprocess.DEVNULL
        )
        times.append(time.perf_counter() - start)
    return times


def heavy_imports(root: Path) -> list[str]:
    """Modules a `render` must not import: only sending needs them."""
    probe = (
        "import sys\nfrom newsletter.cli import main\n"
        f"sys.argv = ['newsletter', 'render', {SAMPLE!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('heavy:', *[m for m in ('sendgrid', 'python_http_client', 'aiosmtpd') "
        "if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    return [line for line in out if line.startswith("heavy:")][-1].split()[1:]


def main() -> None:
    root = workspace()
    inproc = in_process(root, 30)
    procs = whole_process(root, 10)
    print(
        f"load+render+inline (in process, 30 runs): median {statistics.median(inproc) * 1e3:.1f} ms"
        f" (min {min(inproc) * 1e3:.1f}, max {max(inproc) * 1e3:.1f})"
    )
    median = statistics.median(procs) * 1e3
    print(
        f"`newsletter render` whole process (10 runs): median {median:.0f} ms"
        f" (min {min(procs) * 1e3:.0f}, max {max(procs) * 1e3:.0f})"
    )
    print(f"heavy modules imported by `render`: {heavy_imports(root) or 'none'}")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
