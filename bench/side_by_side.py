"""Benchmark: this checkout against other commits, interleaved, on the same lists.

Run by hand from the repository root:

    git worktree add --detach ../base 591be1c
    (cd ../base && python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]')
    .venv/bin/python bench/side_by_side.py ../base .

Each checkout must have its own `.venv` and a `bench/send.py` with `--child-sendgrid`
(every commit since the SendGrid benchmark has). Each round sends, for each checkout in
turn: the sorted and the shuffled list through SendGrid (to `tests/servers/sendgrid.py` of
this checkout, in its own process), each in a fresh process of that checkout; and
`--smtp-rows` messages over the default connections to smtp-sink, beside a bare smtplib
loop of the same message in the same process. Per checkout it prints medians: the rate,
the CPU time per recipient (user + system, of the sending process) and the peak RSS.
Machines are noisy; only figures of one run compare.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from send import ServerProcess, write_list  # noqa: E402  (the script beside this one)

# Runs in a checkout's own interpreter, with its own bench/send.py: one SMTP send of N
# rows to a fresh smtp-sink, after a bare smtplib loop of the same message.
_SMTP_CHILD = """
import json, resource, sys, tempfile
from pathlib import Path
repo, rows = sys.argv[1], int(sys.argv[2])
sys.path[:0] = [repo + "/bench", repo]
import send as b
scratch = Path(tempfile.mkdtemp())
list_path = b.write_list(scratch / "list.csv", rows)
message, sender = b.sample_message(scratch)
sink = b.Sink(scratch)
try:
    b.smtp_newsletter(sink, b.write_list(scratch / "warm.csv", 50), 50, scratch)
    bare = b.smtp_bare(sink, message, sender, rows)
    before = resource.getrusage(resource.RUSAGE_SELF)
    ours = b.smtp_newsletter(sink, list_path, rows, scratch)
    after = resource.getrusage(resource.RUSAGE_SELF)
finally:
    sink.close()
cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
print(json.dumps({"rate": ours, "bare": bare, "cpu_us": cpu / rows * 1e6}))
"""


def python_of(checkout: Path) -> str:
    return str(checkout / ".venv" / "bin" / "python")


def sendgrid(checkout: Path, list_path: Path, rows: int, server: ServerProcess) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [
            python_of(checkout),
            str(checkout / "bench" / "send.py"),
            "--child-sendgrid",
            str(list_path),
            server.url,
            str(list_path.parent),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    if run["sent"] != rows:
        raise AssertionError(f"{checkout}: {rows} rows, {run['sent']} sent")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"rate": rows / run["seconds"], "cpu_us": cpu / rows * 1e6, "rss_mb": run["rss_mb"]}


def smtp(checkout: Path, rows: int) -> dict[str, Any]:
    out = subprocess.run(
        [python_of(checkout), "-c", _SMTP_CHILD, str(checkout), str(rows)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    run: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", nargs="+", type=Path, help="repository roots to compare")
    parser.add_argument("--rows", type=int, default=1_000_000, help="SendGrid rows")
    parser.add_argument("--smtp-rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    checkouts = [c.resolve() for c in args.checkouts]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as scratch:
        lists = {
            "sorted": write_list(Path(scratch) / "sorted.csv", args.rows),
            "random": write_list(Path(scratch) / "random.csv", args.rows, shuffled=True),
        }
        server = ServerProcess()
        try:
            for round_ in range(1, args.rounds + 1):
                for checkout in checkouts:
                    for kind, list_path in lists.items():
                        run = sendgrid(checkout, list_path, args.rows, server)
                        results.setdefault((str(checkout), f"sendgrid {kind}"), []).append(run)
                        print(
                            f"round {round_} {checkout.name}: SendGrid {kind} "
                            f"{run['rate']:,.0f}/s, {run['cpu_us']:.1f} µs CPU a recipient, "
                            f"peak RSS {run['rss_mb']:.0f} MB",
                            flush=True,
                        )
                    if args.smtp_rows:
                        run = smtp(checkout, args.smtp_rows)
                        results.setdefault((str(checkout), "smtp"), []).append(run)
                        print(
                            f"round {round_} {checkout.name}: SMTP {run['rate']:,.0f}/s "
                            f"(bare loop {run['bare']:,.0f}/s), {run['cpu_us']:.0f} µs CPU a "
                            "message",
                            flush=True,
                        )
        finally:
            server.close()
    rows, smtp_rows = f"{args.rows:,}", f"{args.smtp_rows:,}"
    print(f"\nmedians of {args.rounds} rounds, {rows} SendGrid rows, {smtp_rows} SMTP:")
    print("| checkout | what | rate /s | CPU µs each | peak RSS MB or share of bare loop |")
    print("|---|---|---|---|---|")
    for (checkout, what), runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        cpu = statistics.median(r["cpu_us"] for r in runs)
        if what == "smtp":
            extra = f"{statistics.median(100 * r['rate'] / r['bare'] for r in runs):.0f}%"
        else:
            extra = f"{statistics.median(r['rss_mb'] for r in runs):.0f}"
        print(f"| {Path(checkout).name} | {what} | {rate:,.0f} | {cpu:.1f} | {extra} |")


if __name__ == "__main__":
    main()
