"""Soak: a send under random provider faults, killed and resumed, loses and doubles no one.

A real sending process runs against a test server that injects faults at random (seeded);
the test kills it with SIGKILL at random points (seeded), starts it again, and so on, then
finishes with a final run. Every other killed run and the final one are the real
`python -m newsletter send --yes --json`; the others run the same `send_issue` with a backoff
of milliseconds (`DRIVER`), since the command's 1 s backoff cannot be changed. Afterwards
what the server received and what the ledger says are checked against each other:

- no one got the issue twice;
- every key the ledger calls `sent` was delivered exactly once, and every delivered key is
  `sent` or `unknown` in the ledger (an unknown one may or may not have arrived);
- no one is lost: every subscriber is `sent` or `unknown`, nobody `failed` or missing;
- the final report's counts are exactly what the ledger says.

The short form (a few seconds) runs by default; `NEWSLETTER_SOAK=long` runs 20,000
subscribers through SendGrid and SMTP and streams a 200 MB list. `-s` shows the figures.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from newsletter.storage.ledger import Ledger
from tests.sending import ISSUE_ID, SECRET, readers, workspace
from tests.servers import sendgrid, smtp
from tests.servers.sendgrid import SendGridServer
from tests.servers.smtp import SMTPServer
from tests.workspace import SAMPLE

pytestmark = pytest.mark.soak

LONG = os.environ.get("NEWSLETTER_SOAK") == "long"
SEED = int(os.environ.get("NEWSLETTER_SOAK_SEED", "20250801"))

# The send loop in a process of its own, as the CLI runs it, but with a backoff of
# milliseconds: SendOptions' 1 s (doubling to 60 s) cannot be changed from the command line.
DRIVER = """
import json, sys
from pathlib import Path
from newsletter.config import load_config
from newsletter.delivery.send import SendOptions, send_issue
from newsletter.errors import SendStopped
provider, issue, to = sys.argv[1:4]
options = SendOptions(provider=provider, backoff=0.01, max_backoff=0.05)
try:
    report = send_issue(load_config(Path("newsletter.yaml")), Path(issue), Path(to), options)
except SendStopped as exc:
    print(json.dumps(exc.report.to_json(), default=str))
    sys.exit(3)
print(json.dumps(report.to_json(), default=str))
"""


@dataclass
class Soak:
    """One soak: who is on the list, how to see progress, and what happened."""

    ws: Path
    env: dict[str, str]
    provider: str
    subscribers: int
    progress: Callable[[], int]  # requests (SendGrid) or transactions (SMTP) seen so far
    rng: random.Random
    kills: int = 0
    runs: list[int] = field(default_factory=list)  # exit codes of the runs not killed
    killed_at: list[str] = field(default_factory=list)

    def start(self, *command: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*command],
            cwd=self.ws,
            env={**os.environ, "NEWSLETTER_SECRET": SECRET, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def cli(self) -> subprocess.Popen[bytes]:
        """The real command, as a user (or cron) runs it."""
        return self.start(
            sys.executable, "-m", "newsletter", "send", SAMPLE, "--to", "list.csv", "--yes",
            "--json", "-p", self.provider,
        )  # fmt: skip

    def driver(self) -> subprocess.Popen[bytes]:
        """The same send with a backoff of milliseconds, so faults cost no real seconds."""
        return self.start(sys.executable, "-c", DRIVER, self.provider, SAMPLE, "list.csv")

    def run_and_kill(self, at_least: int, steps: tuple[int, int], timeout: float = 600) -> None:
        """Start sends and SIGKILL each after a random number of steps, `at_least` times
        (every other one the real command), then run once more until a send ends by itself
        (finished, or stopped by too many faults)."""
        while True:
            cli = self.kills < at_least and self.kills % 2 == 0
            proc = self.cli() if cli else self.driver()
            target = self.progress() + self.rng.randint(*steps)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and (self.kills >= at_least or self.progress() < target):
                assert time.monotonic() < deadline, "a send made no progress"
                time.sleep(0.002)
            if proc.poll() is None:
                time.sleep(self.rng.uniform(0, 0.02))  # somewhere inside a request, or between
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                self.kills += 1
                self.killed_at.append(f"{'command' if cli else 'driver'} at {self.progress()}")
                continue
            _, err = proc.communicate()
            assert proc.returncode in (0, 3), err.decode()  # 3: stopped by too many faults
            self.runs.append(proc.returncode)
            if self.kills >= at_least:
                return
            assert len(self.runs) < 5, "the sends end before they can be killed: a longer list"

    def final(self) -> dict[str, Any]:
        """The last run: the real command, faults off, as a user runs it after a crash."""
        proc = self.cli()
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()
        report: dict[str, Any] = json.loads(out)
        return report


def ledger_state(ws: Path) -> dict[str, str]:
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        return {d.key: d.status for d in ledger.deliveries(ISSUE_ID)}


def check_nothing_lost_or_doubled(
    soak: Soak, delivered: Counter[str], before_final: Counter[str], report: dict[str, Any]
) -> dict[str, int]:
    """The soak's promises, checked from what the server received and what the ledger says."""
    everyone = {f"reader{i:05d}@example.com" for i in range(soak.subscribers)}
    state = ledger_state(soak.ws)
    statuses = Counter(state.values())
    duplicates = sorted(k for k, n in delivered.items() if n > 1)
    sent = {k for k, s in state.items() if s == "sent"}
    unknown = {k for k, s in state.items() if s == "unknown"}
    lost = sorted(everyone - sent - unknown) + sorted(k for k in sent if delivered[k] != 1)
    assert duplicates == [], f"{len(duplicates)} got the issue twice: {duplicates[:5]}"
    assert lost == [], f"{len(lost)} lost: {lost[:5]}"
    assert set(state) == everyone
    assert set(delivered) <= sent | unknown, "delivered, but the ledger says otherwise"
    assert set(statuses) <= {"sent", "unknown"}
    # the final report's counts are exact
    unknown_before = before_final["unknown"] + before_final["pending"]
    assert report["rows"] == report["recipients"] == soak.subscribers
    assert report["already_sent"] == before_final["sent"]
    assert report["unknown_before"] == unknown_before
    assert report["sent"] == soak.subscribers - before_final["sent"] - unknown_before
    assert (report["failed"], report["unknown"], report["rejected"]) == (0, 0, 0)
    assert statuses["sent"] == before_final["sent"] + report["sent"]
    assert statuses["unknown"] == unknown_before
    return {
        "subscribers": soak.subscribers,
        "delivered": sum(delivered.values()),
        "sent": statuses["sent"],
        "unknown": statuses["unknown"],
        "unknown but delivered": len(unknown & set(delivered)),
        "duplicates": len(duplicates),
        "lost": len(lost),
    }


def show(title: str, figures: dict[str, Any]) -> None:
    print(f"\n{title}")
    for name, value in figures.items():
        print(f"  {name:24} {value}")


# --- SendGrid -----------------------------------------------------------------------------

SENDGRID_FAULTS = (
    sendgrid.status(429, retry_after=0),
    sendgrid.status(500),
    sendgrid.status(503),
    sendgrid.slow(0.05),
    sendgrid.slow_answer(0.05),
    sendgrid.drop_before_read(),
    sendgrid.drop_after_accept(),
)


def test_sendgrid_soak_under_faults_and_kills(tmp_path: Path) -> None:
    subscribers, batch, rate = (20_000, 100, 0.1) if LONG else (1_500, 50, 0.25)
    ws = workspace(tmp_path / "ws", subscribers, f"sendgrid:\n  batch_size: {batch}\n")
    started = time.monotonic()
    with SendGridServer("SG.soak-key-0123456789") as server:
        server.random_faults(SEED, rate, SENDGRID_FAULTS)
        soak = Soak(
            ws,
            {"SENDGRID_API_KEY": server.api_key, "SENDGRID_API_HOST": server.url},
            "sendgrid",
            subscribers,
            lambda: server.requests,
            random.Random(SEED),
        )
        soak.run_and_kill(at_least=5 if LONG else 3, steps=(2, 30) if LONG else (2, 6))
        faults = server.faults_injected
        server.random_faults(SEED, 0)
        before_final = Counter(ledger_state(ws).values())
        report = soak.final()
        delivered = server.delivered_to()
        requests = server.requests
    figures = check_nothing_lost_or_doubled(soak, delivered, before_final, report)
    show(
        f"SendGrid soak ({'long' if LONG else 'short'}, seed {SEED})",
        {
            **figures,
            "requests": requests,
            "faults": dict(sorted(faults.items())),
            "kills": f"{soak.kills}: " + ", ".join(soak.killed_at) + " (requests)",
            "runs that ended": [*soak.runs, 0],
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    assert soak.kills >= 3 and sum(faults.values()) > 0


# --- SMTP ---------------------------------------------------------------------------------

SMTP_FAULTS = (
    smtp.reply(421, at="MAIL"),
    smtp.reply(451, at="MAIL"),
    smtp.reply(451, at="RCPT"),
    smtp.reply(451, at="DATA"),
    smtp.drop(),
    smtp.drop(stored=False),
)


def test_smtp_soak_under_faults_and_kills(tmp_path: Path) -> None:
    subscribers, rate = (20_000, 0.02) if LONG else (300, 0.05)
    ws = workspace(tmp_path / "ws", subscribers)
    started = time.monotonic()
    with SMTPServer() as server:
        server.random_faults(SEED, rate, SMTP_FAULTS)
        soak = Soak(
            ws,
            {"SMTP_HOST": server.host, "SMTP_PORT": str(server.port), "SMTP_SECURITY": "none"},
            "smtp",
            subscribers,
            lambda: server.transactions,
            random.Random(SEED + 1),
        )
        soak.run_and_kill(at_least=5 if LONG else 3, steps=(50, 3000) if LONG else (10, 50))
        faults = server.faults_injected
        server.random_faults(SEED, 0)
        before_final = Counter(ledger_state(ws).values())
        report = soak.final()
        delivered = Counter(r for m in server.messages for r in m.rcpt_tos)
        transactions, connections = server.transactions, server.connections
    figures = check_nothing_lost_or_doubled(soak, delivered, before_final, report)
    show(
        f"SMTP soak ({'long' if LONG else 'short'}, seed {SEED})",
        {
            **figures,
            "transactions": transactions,
            "connections": connections,
            "faults": dict(sorted(faults.items())),
            "kills": f"{soak.kills}: " + ", ".join(soak.killed_at) + " (transactions)",
            "runs that ended": [*soak.runs, 0],
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    assert soak.kills >= 3 and sum(faults.values()) > 0


# --- a 200 MB list ------------------------------------------------------------------------

PEAK_MEMORY = """
import atexit, runpy, sys

def peak():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print("VmHWM", line.split()[1], file=sys.stderr)

atexit.register(peak)
sys.argv = ["newsletter", *sys.argv[1:]]
runpy.run_module("newsletter", run_name="__main__")
"""


def dry_run_peak_kb(ws: Path, path: Path) -> tuple[int, int]:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            PEAK_MEMORY,
            "send",
            SAMPLE,
            "--to",
            str(path),
            "--dry-run",
            "--json",
        ],
        cwd=ws,
        capture_output=True,
        check=False,
        env={**os.environ, "NEWSLETTER_SECRET": SECRET},
    )
    assert proc.returncode == 0, proc.stderr
    peak = int(proc.stderr.decode().rsplit("VmHWM", 1)[1].split()[0])
    return json.loads(proc.stdout)["to_send"], peak


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_200_mb_list_streams_in_constant_memory(tmp_path: Path) -> None:
    """200 MB in the long form; the short form streams 4 MB (about 100,000 rows, five times
    the small list: held in memory they would take some 30 MB more) the same way."""
    megabytes = 200 if LONG else 4
    ws = workspace(tmp_path / "ws", 0)
    small, big = ws / "small.csv", ws / "big.csv"
    small.write_text(readers(20_000), encoding="utf-8")
    rows = 0
    with big.open("w", encoding="utf-8") as fh:
        fh.write("email,name,city\n")
        while fh.tell() < megabytes * 1024 * 1024:
            fh.write(
                "".join(
                    f"r{rows + i:08d}@example.com,Reader {rows + i},Oslo\n" for i in range(10_000)
                )
            )
            rows += 10_000
    started = time.monotonic()
    small_to_send, small_peak = dry_run_peak_kb(ws, small)
    big_to_send, big_peak = dry_run_peak_kb(ws, big)
    show(
        f"{megabytes} MB list, dry run",
        {
            "rows": f"{big_to_send:,} ({big.stat().st_size / 2**20:.0f} MB)",
            "peak memory": f"{big_peak / 1024:.1f} MB (20,000 rows: {small_peak / 1024:.1f} MB)",
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    assert (small_to_send, big_to_send) == (20_000, rows)
    assert big_peak - small_peak < 10_000
