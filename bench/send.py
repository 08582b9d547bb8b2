"""Benchmark: sending an issue through SendGrid and SMTP, a dry run, and the naive way.

Run by hand from the repository root: `.venv/bin/python bench/send.py [--quick] [--only NAME]...`
with NAME among sendgrid, latency, smtp, relay, dryrun, naive (default: all). Prints medians
of several runs measured side by side in one run, as a Markdown table; the figures go in
docs/benchmarks.md. Exits 1 if a target is missed.

    sendgrid  1,000,000 subscribers (200,000 with --quick) through `send_issue` to the
              SendGrid-like test server, which runs in its own process so that client and
              server do not share a GIL. Each send runs in a fresh process, which reports
              its peak RSS; 100,000-row sends run alongside to show that memory is flat.
              The server counts recipients, and the count must equal the rows. The same
              rows shuffled are sent each round too: random order at >= 85% of sorted.
    latency   200,000 subscribers (50,000 with --quick) to the same server made to answer
              each request 150 ms late, as the real API takes 100-300 ms, with 4 requests
              out (the default `sendgrid.concurrent_requests`), 8 (recommended: >= 40,000/s)
              and 16; the server counts the connections each send opened.
    smtp      10,000 subscribers over the default 4 connections to Postfix's smtp-sink (which
              offers PIPELINING; /usr/sbin/smtp-sink, or fetched with `apt-get download
              postfix` into a cache folder), 2,000 over one connection, beside a bare
              smtplib loop sending as many pre-built messages of the same size; the share
              of the loop per round must be >= 75%.
    relay     200 subscribers through bench/latency_proxy.py (25 ms each way: a relay 50 ms
              away) to smtp-sink, with 16 connections (recommended), 4 and 1, beside a bare
              smtplib loop through the same proxy; >= 100 messages/s with 16.
    dryrun    `newsletter send ISSUE --to list.csv --dry-run` of 10,000 subscribers, as a
              whole process.
    naive     Render + CSS-inline + build an EmailMessage per subscriber, against which the
              message builder and the SMTP send are given as ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SAMPLE = "issues/2025-08-01-north-korea.yaml"
NEWSLETTER = Path(sys.executable).with_name("newsletter")
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
API_KEY = "SG.bench-key-for-the-loopback-server"
SINK_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "newsletter-bench"
BENCHMARKS = ("sendgrid", "latency", "smtp", "relay", "dryrun", "naive")
#: The proxy's delay each way: a relay 50 ms away. `smtp.connections` recommended for it.
RELAY_DELAY = 0.025
RELAY_CONNECTIONS = 16
LATENCY = 0.150
#: `sendgrid.concurrent_requests` the README recommends against the real API.
RECOMMENDED_REQUESTS = 8


# --- results --------------------------------------------------------------------------------


@dataclass
class Result:
    """One figure: its runs, its target, and which way is better."""

    name: str
    unit: str
    values: list[float]
    target: float | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        ok = self.median >= self.target if self.higher_is_better else self.median < self.target
        return "pass" if ok else "FAIL"

    @property
    def target_text(self) -> str:
        if self.target is None:
            return ""
        return ("≥ " if self.higher_is_better else "< ") + _fmt(self.target)


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: list[Result]) -> str:
    """A Markdown table: readable in a terminal, pasteable into docs/benchmarks.md."""
    rows = [("benchmark", "unit", "median", "min", "max", "runs", "target", "")]
    for r in results:
        rows.append(
            (
                r.name,
                r.unit,
                _fmt(r.median),
                _fmt(min(r.values)),
                _fmt(max(r.values)),
                str(len(r.values)),
                r.target_text,
                r.verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = [f"- {r.name}: {r.note}" for r in results if r.note]
    return "\n".join(lines + (["", *notes] if notes else []))


# --- workspaces and lists -------------------------------------------------------------------


def workspace(parent: Path) -> Path:
    """A fresh workspace (config + sample issue): an empty ledger every time."""
    root = Path(tempfile.mkdtemp(prefix="ws-", dir=parent))
    (root / "issues").mkdir()
    shutil.copy(REPO / SAMPLE, root / SAMPLE)
    shutil.copy(REPO / "newsletter.yaml", root / "newsletter.yaml")
    return root


def write_list(path: Path, rows: int, *, shuffled: bool = False) -> Path:
    """`email,name` with unique plain addresses, written in blocks so 1M rows take ~1 s.

    `shuffled`: the same rows in random order (a fixed seed), as a list exported from a
    real database comes: the ledger then meets the addresses in no order.
    """
    numbers = list(range(1, rows + 1))
    if shuffled:
        random.Random(13).shuffle(numbers)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("email,name\n")
        for start in range(0, rows, 100_000):
            block = numbers[start : start + 100_000]
            fh.write("".join(f"user{i:07d}@example.com,Reader {i}\n" for i in block))
    return path


def load(root: Path, env: dict[str, str]) -> Any:
    from newsletter.config import load_config

    return load_config(root / "newsletter.yaml", env={"NEWSLETTER_SECRET": SECRET, **env})


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


# --- 1. SendGrid ----------------------------------------------------------------------------

_SERVER = """\
import sys
sys.path.insert(0, sys.argv[1])
from tests.servers.sendgrid import SendGridServer, slow_answer
with SendGridServer(sys.argv[2], validate=False, record=False, count_recipients=True) as s:
    if float(sys.argv[3]):
        s.random_faults(1, 1.0, [slow_answer(float(sys.argv[3]))])
    print(s.url, flush=True)
    for line in sys.stdin:
        if line.strip() != "count":
            break
        print(s.requests, s.accepted_count, s.recipients, s.connections_opened, flush=True)
"""


class ServerProcess:
    """The SendGrid-like server in a process of its own, asked for its counters over a pipe."""

    def __init__(self, latency: float = 0.0) -> None:
        """`latency`: seconds the server waits before answering each request."""
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(REPO), API_KEY, str(latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.close()
            raise RuntimeError("the SendGrid-like server did not start")

    def counts(self) -> tuple[int, int, int]:
        """(requests, accepted requests, recipients) so far."""
        return self._ask()[:3]

    def connections(self) -> int:
        """Connections clients opened so far."""
        return self._ask()[3]

    def _ask(self) -> tuple[int, int, int, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        requests, accepted, recipients, connections = map(int, self.proc.stdout.readline().split())
        return requests, accepted, recipients, connections

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM), in MB.

    Linux carries `ru_maxrss` over fork and exec, so in a child it is never below the
    parent's RSS at the fork; VmHWM belongs to the new image only. Both are reported.
    """
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sendgrid_child(list_path: Path, url: str, scratch: Path, concurrency: str = "") -> None:
    """In a fresh process: one send, then its time and peak RSS as JSON on stdout."""
    from newsletter.delivery.send import SendOptions, send_issue

    root = workspace(scratch)
    if concurrency:
        with (root / "newsletter.yaml").open("a", encoding="utf-8") as fh:
            fh.write(f"sendgrid:\n  concurrent_requests: {concurrency}\n")
    config = load(root, {"SENDGRID_API_KEY": API_KEY, "SENDGRID_API_HOST": url})
    seconds, report = timed(
        lambda: send_issue(config, root / SAMPLE, list_path, SendOptions(provider="sendgrid"))
    )
    print(
        json.dumps(
            {
                "seconds": seconds,
                "sent": report.sent,
                "rss_mb": peak_rss_mb(),
                "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )
    shutil.rmtree(root)


def sendgrid_once(
    server: ServerProcess, list_path: Path, rows: int, scratch: Path, concurrency: int = 0
) -> dict[str, Any]:
    """One send in a child process; `concurrency` 0 keeps the configured default."""
    before = server.counts()
    child = [sys.executable, __file__, "--child-sendgrid", str(list_path), server.url, str(scratch)]
    out = subprocess.run(
        child + ([str(concurrency)] if concurrency else []),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    run: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    after = server.counts()
    got = after[2] - before[2]
    if run["sent"] != rows or got != rows:
        raise AssertionError(
            f"SendGrid: {rows} rows, report says {run['sent']} sent, "
            f"server counted {got} recipients"
        )
    return run


def bench_sendgrid(quick: bool, scratch: Path) -> list[Result]:
    large = 200_000 if quick else 1_000_000
    small = 100_000
    runs = 3
    lists = {n: write_list(scratch / f"list-{n}.csv", n) for n in (small, large)}
    shuffled = write_list(scratch / f"list-{large}-shuffled.csv", large, shuffled=True)
    rate: list[float] = []
    random_rate: list[float] = []
    share: list[float] = []
    rss: dict[int, list[float]] = {small: [], large: []}
    maxrss: dict[int, list[float]] = {small: [], large: []}
    server = ServerProcess()
    try:
        for i in range(runs):
            for n in (small, large):  # side by side: a small and a large send each round
                run = sendgrid_once(server, lists[n], n, scratch)
                rss[n].append(run["rss_mb"])
                maxrss[n].append(run["ru_maxrss_mb"])
                if n == large:
                    rate.append(n / run["seconds"])
                print(
                    f"  sendgrid run {i + 1}/{runs}, {n:,} rows: {run['seconds']:.1f} s, "
                    f"{n / run['seconds']:,.0f}/s, peak RSS {run['rss_mb']:.0f} MB "
                    f"(ru_maxrss {run['ru_maxrss_mb']:.0f} MB)",
                    flush=True,
                )
            run = sendgrid_once(server, shuffled, large, scratch)
            random_rate.append(large / run["seconds"])
            share.append(100 * random_rate[-1] / rate[-1])
            print(
                f"  sendgrid run {i + 1}/{runs}, {large:,} rows in random order: "
                f"{run['seconds']:.1f} s, {random_rate[-1]:,.0f}/s, {share[-1]:.0f}% of sorted",
                flush=True,
            )
        requests = server.counts()[0]
    finally:
        server.close()
    growth = statistics.median(rss[large]) - statistics.median(rss[small])
    return [
        Result(
            f"SendGrid send, {large:,} rows",
            "recipients/s",
            rate,
            40_000,
            note=f"server counted every recipient; {requests:,} requests in all",
        ),
        Result(
            f"SendGrid send, {large:,} rows in random order", "recipients/s", random_rate, 40_000
        ),
        Result(
            "SendGrid send, random order / sorted, same round",
            "%",
            share,
            85,
            note="within 15% of the sorted list's rate",
        ),
        Result(
            f"SendGrid peak RSS, {small:,} rows",
            "MB",
            rss[small],
            120,
            higher_is_better=False,
            note=f"VmHWM; ru_maxrss median {statistics.median(maxrss[small]):.0f} MB",
        ),
        Result(
            f"SendGrid peak RSS, {large:,} rows",
            "MB",
            rss[large],
            120,
            higher_is_better=False,
            note=f"VmHWM; ru_maxrss median {statistics.median(maxrss[large]):.0f} MB; "
            f"{growth:+.1f} MB over the {small:,}-row send (flat: within a few MB)",
        ),
    ]


def bench_latency(quick: bool, scratch: Path) -> list[Result]:
    rows = 50_000 if quick else 200_000
    list_path = write_list(scratch / f"list-{rows}.csv", rows)
    rates: dict[int, list[float]] = {4: [], RECOMMENDED_REQUESTS: [], 16: []}
    opened: dict[int, list[int]] = {n: [] for n in rates}
    prompt: list[float] = []  # the same send to a server that answers at once: the CPU's rate
    share: list[float] = []
    server = ServerProcess(latency=LATENCY)
    quick_server = ServerProcess()
    try:
        for i in range(3):
            run = sendgrid_once(quick_server, list_path, rows, scratch, RECOMMENDED_REQUESTS)
            prompt.append(rows / run["seconds"])
            print(
                f"  latency run {i + 1}/3, answers at once: {run['seconds']:.2f} s, "
                f"{prompt[-1]:,.0f}/s",
                flush=True,
            )
            for concurrency in rates:
                before = server.connections()
                run = sendgrid_once(server, list_path, rows, scratch, concurrency)
                rates[concurrency].append(rows / run["seconds"])
                opened[concurrency].append(server.connections() - before)
                print(
                    f"  latency run {i + 1}/3, {concurrency} out at once: {run['seconds']:.2f} s, "
                    f"{rows / run['seconds']:,.0f}/s, {opened[concurrency][-1]} connections",
                    flush=True,
                )
            share.append(100 * rates[RECOMMENDED_REQUESTS][-1] / prompt[-1])
    finally:
        server.close()
        quick_server.close()
    ms = f"{LATENCY * 1000:.0f} ms"

    def limit(n: int) -> str:
        return f"limit {n / LATENCY * 1000:,.0f}/s (1,000 a request)"

    def kept(n: int) -> str:
        return f"{max(opened[n])} connections for {rows // 1000} requests"

    return [
        Result(
            f"SendGrid, answers {ms} late, {rows:,} rows, 4 requests out (the default)",
            "recipients/s",
            rates[4],
            note=f"{limit(4)}; {kept(4)}",
        ),
        Result(
            f"SendGrid, answers {ms} late, {rows:,} rows, {RECOMMENDED_REQUESTS} requests out "
            "(recommended)",
            "recipients/s",
            rates[RECOMMENDED_REQUESTS],
            40_000,
            note=f"{limit(RECOMMENDED_REQUESTS)}; {kept(RECOMMENDED_REQUESTS)}; a kill leaves "
            f"up to {RECOMMENDED_REQUESTS} batches ({RECOMMENDED_REQUESTS * 1000:,} "
            "recipients) unknown",
        ),
        Result(
            f"SendGrid, {rows:,} rows, answers at once, {RECOMMENDED_REQUESTS} requests out",
            "recipients/s",
            prompt,
            note="what the client can do on this machine: the ceiling for the rows above",
        ),
        Result(
            f"SendGrid, answers {ms} late / at once, {RECOMMENDED_REQUESTS} requests out, "
            "same round",
            "%",
            share,
        ),
        Result(
            f"SendGrid, answers {ms} late, {rows:,} rows, 16 requests out",
            "recipients/s",
            rates[16],
            note=f"{limit(16)}; {kept(16)}",
        ),
    ]


# --- 2. SMTP --------------------------------------------------------------------------------


def smtp_sink_binary() -> Path:
    """Postfix's smtp-sink, unpacked from the Debian package into a cache folder if missing."""
    if Path("/usr/sbin/smtp-sink").exists():  # Debian's postfix package, installed
        return Path("/usr/sbin/smtp-sink")
    for root in (Path("/tmp/postfix"), SINK_CACHE / "postfix"):
        if (root / "usr/sbin/smtp-sink").exists():
            return root / "usr/sbin/smtp-sink"
    SINK_CACHE.mkdir(parents=True, exist_ok=True)
    download = ["apt-get", "download", "postfix"]
    if subprocess.run(download, cwd=SINK_CACHE, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        subprocess.run(download, cwd=SINK_CACHE, check=True, capture_output=True)
    deb = max(SINK_CACHE.glob("postfix_*.deb"), key=lambda p: p.stat().st_mtime)
    subprocess.run(["dpkg", "-x", str(deb), str(SINK_CACHE / "postfix")], check=True)
    return SINK_CACHE / "postfix/usr/sbin/smtp-sink"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """smtp-sink on 127.0.0.1: accepts every message and throws it away, counting them (-c)."""

    def __init__(self, scratch: Path) -> None:
        binary = smtp_sink_binary()
        self.port = _free_port()
        self.log = scratch / "smtp-sink.out"
        # -c: running counters on stdout; -u: required (only) when started as root.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        env = {**os.environ, "LD_LIBRARY_PATH": str(binary.parents[2] / "usr/lib/postfix")}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(binary), *user, "-c", f"127.0.0.1:{self.port}", "1000"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"smtp-sink did not start: {self.log.read_text()}") from None
                time.sleep(0.05)

    def messages(self) -> int:
        """Messages received so far, from the last `mesg=N` counter it printed."""
        found = re.findall(r"mesg=(\d+)", self.log.read_text(errors="replace"))
        return int(found[-1]) if found else 0

    def wait_for(self, count: int, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while (seen := self.messages()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return seen

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _smtp_env(port: int) -> dict[str, str]:
    return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_SECURITY": "none"}


def smtp_newsletter(
    sink: Sink, list_path: Path, rows: int, scratch: Path, connections: int = 0, port: int = 0
) -> float:
    """One `send_issue` through SMTP; messages/s. `connections` 0 keeps the default (4);
    `port`: another way to the sink (the latency proxy)."""
    from newsletter.delivery.send import SendOptions, send_issue

    root = workspace(scratch)
    if connections:
        with (root / "newsletter.yaml").open("a", encoding="utf-8") as fh:
            fh.write(f"smtp:\n  connections: {connections}\n")
    config = load(root, _smtp_env(port or sink.port))
    before = sink.messages()
    seconds, report = timed(
        lambda: send_issue(config, root / SAMPLE, list_path, SendOptions(provider="smtp"))
    )
    got = sink.wait_for(before + rows) - before
    if report.sent != rows or got != rows:
        raise AssertionError(
            f"SMTP: {rows} rows, report says {report.sent} sent, smtp-sink counted {got}"
        )
    shutil.rmtree(root)
    return rows / seconds


def smtp_bare(sink: Sink, message: bytes, sender: str, rows: int, port: int = 0) -> float:
    """The floor: smtplib sending one pre-built message `rows` times over one connection."""
    before = sink.messages()
    start = time.perf_counter()
    conn = smtplib.SMTP("127.0.0.1", port or sink.port)
    conn.ehlo()
    for i in range(1, rows + 1):
        conn.sendmail(sender, [f"user{i:07d}@example.com"], message)
    conn.quit()
    seconds = time.perf_counter() - start
    got = sink.wait_for(before + rows) - before
    if got != rows:
        raise AssertionError(f"bare smtplib: sent {rows}, smtp-sink counted {got}")
    return rows / seconds


def sample_message(scratch: Path) -> tuple[bytes, str]:
    """A real message of the issue (CRLF line ends, as the provider sends it), and its sender."""
    from newsletter.delivery.campaign import prepare

    root = workspace(scratch)
    campaign = prepare(load(root, {}), root / SAMPLE, allow_local_secret=False)
    recipient = campaign.recipient("user0000001@example.com", "Reader 1")
    message = campaign.builder.build(recipient).replace(b"\n", b"\r\n")
    return message, campaign.headers.from_email


def bench_smtp(quick: bool, scratch: Path) -> list[Result]:
    rows = 10_000
    runs = 3
    list_path = write_list(scratch / f"list-smtp-{rows}.csv", rows)
    one_rows = 2_000  # an fsync per message: slow on a busy disk
    one_path = write_list(scratch / f"list-smtp-{one_rows}.csv", one_rows)
    message, sender = sample_message(scratch)
    ours: list[float] = []
    one: list[float] = []
    bare: list[float] = []
    sink = Sink(scratch)
    try:
        smtp_newsletter(sink, write_list(scratch / "warm.csv", 50), 50, scratch)  # warm: imports
        for i in range(runs):
            bare.append(smtp_bare(sink, message, sender, rows))
            ours.append(smtp_newsletter(sink, list_path, rows, scratch))
            one.append(smtp_newsletter(sink, one_path, one_rows, scratch, connections=1))
            print(
                f"  smtp run {i + 1}/{runs}: send_issue {ours[-1]:,.0f}/s (4 connections), "
                f"{one[-1]:,.0f}/s (one), bare smtplib {bare[-1]:,.0f}/s",
                flush=True,
            )
    finally:
        sink.close()
    shares = [100 * a / b for a, b in zip(ours, bare, strict=True)]
    return [
        Result(
            f"SMTP send, {rows:,} rows, 4 connections (the default)",
            "messages/s",
            ours,
            800,
            note="smtp-sink counted every message; it offers PIPELINING",
        ),
        Result(f"SMTP send, {one_rows:,} rows, one connection", "messages/s", one),
        Result(
            f"bare smtplib loop, {rows:,} pre-built {len(message) // 1024} KB messages",
            "messages/s",
            bare,
        ),
        Result(
            "SMTP send (4 connections) / bare smtplib loop, same round",
            "%",
            shares,
            75,
        ),
    ]


class Proxy:
    """bench/latency_proxy.py in a process of its own: `delay` seconds each way to `port`."""

    def __init__(self, port: int, delay: float) -> None:
        self.port = _free_port()
        script = Path(__file__).with_name("latency_proxy.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(self.port), f"127.0.0.1:{port}", str(delay)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("the latency proxy did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)


def bench_relay(quick: bool, scratch: Path) -> list[Result]:
    """SMTP to a relay 50 ms away: smtp-sink behind a proxy delaying each direction 25 ms."""
    rows, bare_rows, runs = 200, 20, 3
    settings = (RELAY_CONNECTIONS, 4, 1)
    list_path = write_list(scratch / f"list-relay-{rows}.csv", rows)
    message, sender = sample_message(scratch)
    rates: dict[int, list[float]] = {n: [] for n in settings}
    bare: list[float] = []
    sink = Sink(scratch)
    proxy = Proxy(sink.port, RELAY_DELAY)
    try:
        for i in range(runs):
            for n in settings:
                n_rows = rows if n > 1 else rows // 4
                path = list_path if n > 1 else write_list(scratch / "relay-one.csv", n_rows)
                rates[n].append(
                    smtp_newsletter(sink, path, n_rows, scratch, connections=n, port=proxy.port)
                )
            bare.append(smtp_bare(sink, message, sender, bare_rows, port=proxy.port))
            print(
                f"  relay run {i + 1}/{runs}: "
                + ", ".join(f"{n} connections {rates[n][-1]:,.0f}/s" for n in settings)
                + f", bare smtplib {bare[-1]:,.1f}/s",
                flush=True,
            )
    finally:
        proxy.close()
        sink.close()
    rtt = 2 * RELAY_DELAY
    limit = RELAY_CONNECTIONS / rtt
    best = statistics.median(rates[RELAY_CONNECTIONS])
    return [
        Result(
            f"SMTP via a 50 ms relay, {rows} rows, {RELAY_CONNECTIONS} connections (recommended)",
            "messages/s",
            rates[RELAY_CONNECTIONS],
            100,
            note=f"limit one round trip per message per connection: {limit:.0f}/s; "
            f"{best / limit:.0%} of it",
        ),
        Result(
            f"SMTP via a 50 ms relay, {rows} rows, 4 connections (the default)",
            "messages/s",
            rates[4],
        ),
        Result(
            f"SMTP via a 50 ms relay, {rows // 4} rows, one connection",
            "messages/s",
            rates[1],
            note=f"limit {1 / rtt:.0f}/s",
        ),
        Result(
            f"bare smtplib loop via the same relay, {bare_rows} messages",
            "messages/s",
            bare,
            note="four round trips a message: what a send without pipelining meets",
        ),
    ]


# --- 3. dry run -----------------------------------------------------------------------------


def bench_dryrun(quick: bool, scratch: Path) -> list[Result]:
    rows = 10_000
    runs = 5
    root = workspace(scratch)
    write_list(root / "list.csv", rows)
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET, "COLUMNS": "200"}
    command = [str(NEWSLETTER), "send", SAMPLE, "--to", "list.csv", "--dry-run"]
    times = []
    for _ in range(runs):
        seconds, done = timed(
            lambda: subprocess.run(
                command, cwd=root, env=env, check=True, capture_output=True, text=True
            )
        )
        if not re.search(rf"Would send\s+{rows} in", done.stdout):
            raise AssertionError(f"dry run did not plan {rows} messages:\n{done.stdout}")
        times.append(seconds)
    return [
        Result(
            f"`newsletter send --dry-run`, {rows:,} rows (whole process)",
            "s",
            times,
            1.5,
            higher_is_better=False,
        )
    ]


# --- 4. the naive way -----------------------------------------------------------------------


def naive_message(campaign: Any, recipient: Any) -> bytes:
    """What a mail-merge does per subscriber: render, inline, build a whole EmailMessage."""
    from email.message import EmailMessage
    from email.utils import formataddr, formatdate, make_msgid

    from newsletter.content.render import render_issue

    rendered = render_issue(campaign.issue, campaign.config)
    html, text = rendered.personalise(recipient.fields)
    h = campaign.headers
    msg = EmailMessage()
    msg["From"] = formataddr((h.from_name or "", h.from_email))
    msg["To"] = formataddr((recipient.name, recipient.email))
    msg["Subject"] = rendered.subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=h.from_email.rpartition("@")[2])
    msg["List-Id"] = f"{h.list_name} <{h.list_id}>"
    msg["List-Unsubscribe"] = f"<{recipient.unsubscribe_url}>"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def bench_naive(quick: bool, scratch: Path, smtp: Result | None) -> list[Result]:
    from newsletter.delivery.campaign import prepare

    naive_rows, build_rows = (50, 10_000) if quick else (200, 10_000)
    runs = 3
    root = workspace(scratch)
    campaign = prepare(load(root, {}), root / SAMPLE, allow_local_secret=False)
    people = [
        campaign.recipient(f"user{i:07d}@example.com", f"Reader {i}")
        for i in range(1, build_rows + 1)
    ]
    naive_message(campaign, people[0])  # warm: imports, template compilation
    campaign.builder.build(people[0])
    naive: list[float] = []
    built: list[float] = []
    for _ in range(runs):
        seconds, _ = timed(lambda: [naive_message(campaign, r) for r in people[:naive_rows]])
        naive.append(naive_rows / seconds)
        seconds, _ = timed(lambda: [campaign.builder.build(r) for r in people])
        built.append(build_rows / seconds)
    base = statistics.median(naive)
    results = [
        Result(f"naive: render + inline + EmailMessage, {naive_rows} rows", "messages/s", naive),
        Result(
            f"MessageBuilder.build, {build_rows:,} rows",
            "messages/s",
            built,
            note=f"{statistics.median(built) / base:,.0f}x the naive way",
        ),
    ]
    if smtp is not None:
        smtp.note += f"; {smtp.median / base:,.0f}x the naive way, end to end"
    return results


def revision() -> str:
    """The commit measured, and whether the library had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "newsletter"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"{head} + uncommitted library changes" if dirty else head


def library_digest() -> str:
    """A hash of the package's sources, to notice an edit made while the benchmark ran."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "newsletter").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


# --- main -----------------------------------------------------------------------------------


@contextmanager
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-send-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    if len(sys.argv) in (5, 6) and sys.argv[1] == "--child-sendgrid":
        sendgrid_child(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), *sys.argv[5:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only this one (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="200,000 rows instead of 1,000,000 for SendGrid; fewer naive rows",
    )
    args = parser.parse_args()
    chosen = args.only or list(BENCHMARKS)
    results: list[Result] = []
    smtp: Result | None = None
    started = time.perf_counter()
    measured, sources = revision(), library_digest()
    with scratch_dir() as scratch:
        if "sendgrid" in chosen:
            print("SendGrid ...", flush=True)
            results += bench_sendgrid(args.quick, scratch)
        if "latency" in chosen:
            print("SendGrid with slow answers ...", flush=True)
            results += bench_latency(args.quick, scratch)
        if "smtp" in chosen:
            print("SMTP ...", flush=True)
            smtp_results = bench_smtp(args.quick, scratch)
            smtp = smtp_results[0]
            results += smtp_results
        if "relay" in chosen:
            print("SMTP through a relay 50 ms away ...", flush=True)
            results += bench_relay(args.quick, scratch)
        if "dryrun" in chosen:
            print("dry run ...", flush=True)
            results += bench_dryrun(args.quick, scratch)
        if "naive" in chosen:
            print("naive ...", flush=True)
            results += bench_naive(args.quick, scratch, smtp)
    print(
        f"\n{date.today()}, {measured}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
        f"{' (--quick)' if args.quick else ''}, {time.perf_counter() - started:.0f} s in all\n"
    )
    print(table(results))
    if library_digest() != sources:
        print("\nwarning: the library's sources changed during the run; run it again")
    if any(r.verdict == "FAIL" for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
