"""Hostile files, leaked secrets, forged tokens, lost answers, killed and doubled sends.

Each test states a promise of the README and would fail if it broke. Commands run through
`CliRunner` (exit code and message) or as real `python -m newsletter` processes where a kill,
a lock or a file-size limit needs a process of its own.
"""

from __future__ import annotations

import email
import email.policy
import hmac
import json
import os
import random
import re
import resource
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from newsletter.cli import app
from newsletter.config import load_config
from newsletter.delivery.send import SendOptions, send_issue
from newsletter.errors import ConfigError, SendStopped, TokenError
from newsletter.lists import tokens
from newsletter.lists.tokens import LOCAL_SECRET, Signer
from newsletter.storage.ledger import Ledger
from newsletter.storage.store import open_store
from tests.sending import ISSUE_ID, readers, workspace
from tests.servers.sendgrid import SendGridServer, status
from tests.servers.smtp import SMTPServer, drop, reply
from tests.workspace import SAMPLE, write_issue

# Fake secrets, distinctive enough that finding one anywhere means it leaked.
API_KEY = "SG.hardening-api-key-7Qx9Vb2LmN4pR8sT"
PASSWORD = "smtp-pass-Zq3Wv8Jk1Hn6-hardening"
SECRET = "token-secret-Yt5Ub9Ic2Od7Pe4Rf0"
SECRETS = (API_KEY, PASSWORD, SECRET)
FAST = {"backoff": 0.0, "max_backoff": 0.0}
LIST_ID = "the-weekly-brief.example.org"


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = workspace(tmp_path / "ws", 5)
    monkeypatch.chdir(root)
    for name in ("NEWSLETTER_SECRET", "SENDGRID_API_KEY", "SMTP_PASSWORD", "NEWSLETTER_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    return root


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def said(result: Result) -> str:
    """What the user saw, with rich's line wrapping undone."""
    return " ".join(result.output.split())


def assert_clean_exit(result: Result, code: int) -> None:
    """Our error and our exit code: never a traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit) or result.exception is None, repr(
        result.exception
    )


def files_under(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


def assert_no_secret(*texts: str | bytes, root: Path | None = None) -> None:
    """No secret in what was printed, nor in any file the workspace holds (ledger included)."""
    blobs = [t.encode() if isinstance(t, str) else t for t in texts]
    if root is not None:
        blobs += [p.read_bytes() for p in files_under(root)]
    for secret in SECRETS:
        assert not any(secret.encode() in blob for blob in blobs), f"{secret} leaked"


def ledger_counts(ws: Path) -> Counter[str]:
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        return ledger.counts(ISSUE_ID)


def start_send(ws: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """`newsletter send` as a process of its own, as a user (or cron) runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "send", SAMPLE, "--to", "list.csv", "--yes", *args],
        cwd=ws,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(ready: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the send never got that far"
        time.sleep(0.01)


def smtp_env(server_port: int, **extra: str) -> dict[str, str]:
    return {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(server_port),
        "SMTP_SECURITY": "none",
        "NEWSLETTER_SECRET": SECRET,
        **extra,
    }


def sg_env(server: SendGridServer, key: str = API_KEY) -> dict[str, str]:
    return {"SENDGRID_API_KEY": key, "SENDGRID_API_HOST": server.url, "NEWSLETTER_SECRET": SECRET}


def free_port() -> int:
    """A port nobody listens on: a connection to it is refused."""
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as s:
        return int(s.server_address[1])


# --- bad files: each gets its message and exit code, and leaves nothing behind ------------

BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: [*c, *c, *c, *c, *c, *c, *c, *c, *c]
"""
DEEP = "title: " + "[" * 2_000 + "]" * 2_000 + "\n"
ARTICLES = "articles:\n  - {headline: H, summary: S, url: 'https://example.org/'}\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", r"issues/2025-08-08-x\.yaml: is empty; expected a YAML mapping"),
        (b"# only a comment\n", r"issues/2025-08-08-x\.yaml: is empty"),
        (bytes(range(256)) * 4, r"issues/2025-08-08-x\.yaml: is a binary file, not YAML text"),
        (b"title: caf\xe9\n", r"issues/2025-08-08-x\.yaml:1: is not UTF-8 text"),
        (BOMB.encode(), r"issues/2025-08-08-x\.yaml:2: YAML syntax error: anchors and aliases"),
        (DEEP.encode(), r"issues/2025-08-08-x\.yaml:1: YAML syntax error: nested more than 50"),
        (
            b"title: One\ntitle: Two\n" + ARTICLES.encode(),
            r"issues/2025-08-08-x\.yaml:2: title: given twice \(first on line 1\); keep one",
        ),
        (
            b"title: T\ndate: 2025-02-30\n" + ARTICLES.encode(),
            r"issues/2025-08-08-x\.yaml:2: date: input should be a valid date",
        ),
        (
            b'title: "half a pair: \\uD800"\n' + ARTICLES.encode(),
            r"issues/2025-08-08-x\.yaml:1: title: the value contains an escape that is no text",
        ),
        (
            b"title: T\n"
            + ARTICLES.replace("'https://example.org/'", '"https://e.org/a\\nb"').encode(),
            r"issues/2025-08-08-x\.yaml:3: articles\[0\]\.url: not an absolute http\(s\) URL",
        ),
        (
            ("title: " + "Long " * 60 + "\n" + ARTICLES).encode(),
            r"issues/2025-08-08-x\.yaml:1: title: as the subject \(none is given\), is 299",
        ),
        (
            b"title: !!python/object/apply:os.system [echo pwned]\n",
            r"issues/2025-08-08-x\.yaml:1: YAML syntax error: could not determine a constructor",
        ),
    ],
    ids=[
        "empty",
        "comment-only",
        "binary",
        "latin-1",
        "yaml-bomb",
        "deep-nesting",
        "duplicate-key",
        "no-such-date",
        "lone-surrogate",
        "url-with-newline",
        "title-too-long-for-a-subject",
        "python-tag",
    ],
)
def test_a_bad_issue_file_gets_its_message_and_exit_1_and_nothing_is_written(
    ws: Path, content: bytes, expected: str
) -> None:
    (ws / "issues" / "2025-08-08-x.yaml").write_bytes(content)
    for command in (
        ["render", "issues/2025-08-08-x.yaml"],
        ["check", "issues/2025-08-08-x.yaml"],
        ["send", "issues/2025-08-08-x.yaml", "--to", "list.csv", "--yes"],
    ):
        result = cli(*command)
        assert_clean_exit(result, 1)
        assert re.search(expected, said(result)), said(result)
    assert not (ws / "build").exists() and not (ws / "outbox").exists()


def test_a_missing_issue_or_templates_or_template_is_named(ws: Path) -> None:
    result = cli("render", "issues/2099-01-01-nope.yaml")
    assert_clean_exit(result, 1)
    assert "issues/2099-01-01-nope.yaml: no such file" in said(result)

    result = cli("render", SAMPLE, "--templates", "no-such-folder")
    assert_clean_exit(result, 1)
    assert "no-such-folder: no such templates folder" in said(result)

    (ws / "t").mkdir()
    (ws / "t" / "email.html").write_text("{% include 'footer.html' %}\n")
    result = cli("send", SAMPLE, "--to", "list.csv", "--yes", "--templates", "t")
    assert_clean_exit(result, 1)
    assert "template footer.html not found in t" in said(result)
    assert not (ws / "outbox").exists() and not (ws / "build").exists()


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


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "list.csv: the file is empty"),
        (b"\n\n \n", "list.csv: the file is empty"),
        (bytes(range(256)) * 4, "list.csv:1: contains a NUL byte, so it is not CSV text"),
        (b"mail,name\nann@example.com,Ann\n", "list.csv:1: no `email` column; the header has"),
        (b"email,name," + b"x" * 200_000 + b"\n", "list.csv:1: the header line is not valid CSV"),
    ],
    ids=["empty", "blank-lines", "binary", "wrong-header", "gigantic-header"],
)
def test_a_bad_list_gets_its_message_and_exit_1_before_anything_is_sent(
    ws: Path, content: bytes, expected: str
) -> None:
    (ws / "list.csv").write_bytes(content)
    for extra in (["--dry-run"], ["--yes"]):
        result = cli("send", SAMPLE, "--to", "list.csv", *extra)
        assert_clean_exit(result, 1)
        assert expected in said(result)
    assert not (ws / "outbox").exists()


def test_a_gigantic_field_is_a_malformed_row_with_its_line_and_the_rest_is_sent(ws: Path) -> None:
    rows = ["email,name", "ann@example.com,Ann", "bob@example.com," + "B" * 300_000]
    rows += ["carol@example.com,Carol", 'dave@example.com,"Dave\nBcc: all@example.net"']
    rows += ["erin@example.com,Erin"]
    (ws / "list.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = cli("send", SAMPLE, "--to", "list.csv", "--yes", "--verbose")
    assert_clean_exit(result, 0)
    out = said(result)
    assert (
        "line 3: (empty): malformed row: not valid CSV (field larger than field limit (131072))"
        in out
    )
    assert "line 5: dave@example.com: malformed row: the name contains a line break" in out
    assert outbox_to(ws) == [
        "Ann <ann@example.com>",
        "Carol <carol@example.com>",
        "Erin <erin@example.com>",
    ]


def outbox_to(ws: Path) -> list[str]:
    return sorted(
        str(email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"])
        for p in files_under(ws / "outbox")
    )


PEAK_MEMORY_SCRIPT = """
import sys
from pathlib import Path
from newsletter.lists.subscribers import read_subscribers
n = 0
with read_subscribers(Path(sys.argv[1])) as stream:
    for row in stream:
        n += 1
# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(n, peak.split()[1])
"""


def rows_and_peak_kb(path: Path) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_SCRIPT, str(path)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_big_list_streams_in_constant_memory(tmp_path: Path) -> None:
    """Ten times the rows, the same memory: the list is never held (test_soak reads 200 MB)."""
    small, big = tmp_path / "small.csv", tmp_path / "big.csv"
    small.write_text(readers(10_000), encoding="utf-8")
    big.write_text(readers(100_000), encoding="utf-8")
    rows_small, peak_small = rows_and_peak_kb(small)
    rows_big, peak_big = rows_and_peak_kb(big)
    assert (rows_small, rows_big) == (10_000, 100_000)
    # 100,000 subscribers held in memory would take some 30 MB more
    assert peak_big - peak_small < 4_000, (peak_small, peak_big)


# --- unsubscribe tokens -------------------------------------------------------------------


def test_a_token_works_for_its_own_address_and_list_only() -> None:
    weekly = Signer(SECRET, "weekly.example.org")
    token = weekly.token("ann@example.com")
    assert weekly.verify(token) == "ann@example.com"
    assert weekly.verify(f"  {token}\n") == "ann@example.com"  # as pasted
    assert weekly.token("bob@example.com") != token
    with pytest.raises(TokenError, match="not valid for this list"):
        Signer(SECRET, "daily.example.org").verify(token)
    with pytest.raises(TokenError, match="not valid for this list"):
        Signer("another-secret-0123456789", "weekly.example.org").verify(token)
    # ann's MAC under bob's address (or ANN's: a token names one exact address)
    mac = token.partition(".")[2]
    for other in ("bob@example.com", "ANN@example.com", "ann@example.co"):
        forged = Signer(SECRET, "x").token(other).partition(".")[0] + "." + mac
        with pytest.raises(TokenError):
            weekly.verify(forged)


@pytest.mark.parametrize("address", ["ann@example.com", "zoë.ünal@example.com", "x" * 300])
def test_the_mac_is_hmac_sha256_so_links_already_sent_keep_working(address: str) -> None:
    """Pinned: the key is HMAC-SHA256(secret, list id), the MAC its HMAC of the address."""
    import base64
    import hashlib

    key = hmac.new(SECRET.encode(), b"weekly.example.org", hashlib.sha256).digest()
    mac = hmac.digest(key, address.encode(), "sha256")[:16]
    expected = base64.urlsafe_b64encode(mac).decode().rstrip("=")
    token = Signer(SECRET, "weekly.example.org").token(address)
    assert token.partition(".")[2] == expected


def test_every_changed_or_shortened_token_is_refused() -> None:
    signer = Signer(SECRET, "weekly.example.org")
    token = signer.token("zoë.ünal@example.com")
    variants = {token[:n] for n in range(len(token))} | {token + "A", token + "=", "." + token}
    for i in range(len(token)):
        for bit in range(8):
            flipped = bytearray(token.encode())
            flipped[i] ^= 1 << bit
            variants.add(flipped.decode("latin-1"))
    head, _, tail = token.partition(".")
    variants |= {
        f"{head}=.{tail}",
        f"{head}.{tail}==",
        f"{head}.{tail[:-1]}{chr(ord(tail[-1]) ^ 1)}",
    }
    variants |= {token.replace("-", "+").replace("_", "/"), f"{head}.\n{tail}", f"{head}..{tail}"}
    variants -= {token, " " + token, token + " "}
    for variant in variants:
        with pytest.raises(TokenError):
            signer.verify(variant)


def test_tokens_are_checked_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MAC is compared in constant time: the decision is compare_digest's, nobody else's."""
    signer = Signer(SECRET, "weekly.example.org")
    token = signer.token("ann@example.com")
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", recording)
    assert signer.verify(token) == "ann@example.com"
    with pytest.raises(TokenError):
        signer.verify(Signer("another-secret-0123456789", "x").token("ann@example.com"))
    assert len(calls) == 2 and all(len(a) == len(b) == 16 for a, b in calls)
    monkeypatch.setattr(tokens.hmac, "compare_digest", lambda a, b: False)
    with pytest.raises(TokenError):
        signer.verify(token)  # refused because compare_digest said so


def test_real_sends_need_the_secret_and_never_connect_without_it(ws: Path) -> None:
    with SendGridServer(API_KEY) as sendgrid, SMTPServer() as smtp:
        for provider, env in (
            ("sendgrid", {"SENDGRID_API_KEY": API_KEY, "SENDGRID_API_HOST": sendgrid.url}),
            ("smtp", {**smtp_env(smtp.port), "NEWSLETTER_SECRET": ""}),
        ):
            result = cli("send", SAMPLE, "--to", "list.csv", "--yes", "-p", provider, env=env)
            assert_clean_exit(result, 1)
            assert "NEWSLETTER_SECRET is not set; unsubscribe links must be signed" in said(result)
        assert sendgrid.requests == 0 and smtp.connections == 0
    with pytest.raises(ConfigError, match="too short") as info:
        Signer("short-secret", "l")
    assert "short-secret" not in str(info.value)


def test_the_outbox_and_dry_runs_sign_with_the_marked_local_secret(ws: Path) -> None:
    assert cli("send", SAMPLE, "--to", "list.csv", "--dry-run").exit_code == 0
    assert cli("send", SAMPLE, "--to", "list.csv", "--yes").exit_code == 0
    local = Signer(LOCAL_SECRET, LIST_ID)
    assert local.local and not Signer(SECRET, LIST_ID).local
    messages = [*files_under(ws / "outbox"), *(ws / "build" / "preview").rglob("*.eml")]
    assert len(messages) == 5 + 3
    for path in messages:
        token = path.read_text().split("?token=", 1)[1].split(">", 1)[0]
        address = local.verify(token)
        assert f"<{address}>" in path.read_text()
        with pytest.raises(TokenError):
            Signer(SECRET, LIST_ID).verify(token)


# --- secrets: never in output, reports, ledgers or messages -------------------------------


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process CLI runs retry at once (the jitter is random.uniform(0, ceiling))."""
    monkeypatch.setattr(random, "uniform", lambda a, b: 0.0)


ECHO = f"you sent {API_KEY} with {SECRET} and {PASSWORD}"
SMTP_ECHO = f"you sent {PASSWORD} with {SECRET}"  # what an SMTP sender knows


def test_sendgrid_errors_that_echo_secrets_leak_nothing(ws: Path, no_backoff: None) -> None:
    with SendGridServer(API_KEY) as server:
        env = {**sg_env(server), "SMTP_PASSWORD": PASSWORD}
        outputs = []
        for faults in (
            [status(500, message=ECHO), status(400, message=ECHO)],  # retried, then refused
            [status(429, message=ECHO, retry_after=0)] * 6,  # given up after 6 tries
            [status(401, message=ECHO)],
        ):
            for extra in ([], ["--json"]):
                server.inject(*faults)
                result = cli(
                    "send", SAMPLE, "--to", "list.csv", "--yes", "-p", "sendgrid", *extra, env=env
                )
                assert_clean_exit(result, 3)
                outputs.append(result.output)
        wrong = cli(
            "send",
            SAMPLE,
            "--to",
            "list.csv",
            "--yes",
            "-p",
            "sendgrid",
            "--json",
            env={**sg_env(server, key="SG.wrong-" + API_KEY)},
        )
        assert_clean_exit(wrong, 3)
        assert "check SENDGRID_API_KEY" in said(wrong)
    assert any(
        "SendGrid refused the request (400): you sent" in " ".join(o.split()) for o in outputs
    )
    assert_no_secret(*outputs, wrong.output, root=ws)
    assert "wrong-" not in wrong.output


def test_an_unreachable_sendgrid_leaks_nothing(ws: Path, no_backoff: None) -> None:
    env = {
        "SENDGRID_API_KEY": API_KEY,
        "SENDGRID_API_HOST": f"http://127.0.0.1:{free_port()}",
        "NEWSLETTER_SECRET": SECRET,
    }
    result = cli("send", SAMPLE, "--to", "list.csv", "--yes", "-p", "sendgrid", "--json", env=env)
    assert_clean_exit(result, 3)
    report = json.loads(result.stdout)
    assert report["failed"] == 5 and "cannot reach SendGrid" in report["stopped"]
    assert_no_secret(result.output, root=ws)


def test_a_real_process_prints_no_secret_on_a_provider_error(ws: Path) -> None:
    with SendGridServer(API_KEY) as server:
        server.inject(status(400, message=ECHO))
        proc = start_send(
            ws, {**sg_env(server), "SMTP_PASSWORD": PASSWORD}, "-p", "sendgrid", "--json"
        )
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert json.loads(out)["failed"] == 5
    assert b"SendGrid refused the request (400)" in err
    assert_no_secret(out, err, root=ws)


def test_a_smtp_login_failure_and_a_refused_connection_leak_nothing(
    ws: Path, no_backoff: None
) -> None:
    with SMTPServer(username="mailer", password="the-right-one-0123") as server:
        env = smtp_env(server.port, SMTP_USER="mailer", SMTP_PASSWORD=PASSWORD)
        login = cli("send", SAMPLE, "--to", "list.csv", "--yes", "-p", "smtp", "--json", env=env)
    assert_clean_exit(login, 3)
    assert "refused the login for 'mailer'" in said(login)
    refused = cli(
        "send",
        SAMPLE,
        "--to",
        "list.csv",
        "--yes",
        "-p",
        "smtp",
        env=smtp_env(free_port(), SMTP_USER="mailer", SMTP_PASSWORD=PASSWORD),
    )
    assert_clean_exit(refused, 3)
    assert "cannot connect to the SMTP server 127.0.0.1:" in said(refused)
    assert_no_secret(login.output, refused.output, root=ws)


def test_a_smtp_reply_that_echoes_secrets_leaks_nothing(ws: Path) -> None:
    with SMTPServer(username="mailer", password=PASSWORD) as server:
        server.inject(reply(554, f"5.7.1 rejected: {SMTP_ECHO}", at="DATA"))
        env = smtp_env(server.port, SMTP_USER="mailer", SMTP_PASSWORD=PASSWORD)
        result = cli("send", SAMPLE, "--to", "list.csv", "--yes", "-p", "smtp", env=env)
    assert_clean_exit(result, 3)
    assert "554 5.7.1 rejected: you sent" in said(result)
    assert_no_secret(result.output, root=ws)


def test_a_smtp_refusal_that_echoes_secrets_leaks_nothing_into_ledger_or_suppressions(
    tmp_path: Path,
) -> None:
    ws = workspace(tmp_path / "ws", 3)
    with SMTPServer(username="mailer", password=PASSWORD) as server:
        server.reject("reader00001@example.com", 550, f"5.1.1 no such user ({SMTP_ECHO})")
        env = smtp_env(server.port, SMTP_USER="mailer", SMTP_PASSWORD=PASSWORD)
        report = send_issue(
            load_config(ws / "newsletter.yaml", env=env),
            ws / SAMPLE,
            ws / "list.csv",
            SendOptions(provider="smtp"),
        )
    assert (report.sent, report.rejected) == (2, 1)
    with open_store(load_config(ws / "newsletter.yaml", env=env)) as store:
        suppressed = store.suppression("reader00001@example.com")
    assert suppressed is not None and suppressed.reason.startswith("550 5.1.1 no such user")
    assert_no_secret(root=ws)


# --- ambiguity: unknown outcomes are never resent unasked; refused connections are --------


class _HoldingSMTP(socketserver.ThreadingTCPServer):
    """An SMTP server that takes each message and holds back its answer until the test sets
    `release` (then answers 250): whoever sends through it is mid-request meanwhile."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HoldingHandler)
        self.received: list[tuple[str, bytes]] = []  # (recipient, message)
        self.release = threading.Event()
        self.closing = False
        self.port = int(self.server_address[1])
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}).start()

    def stop(self) -> None:
        self.closing = True
        self.release.set()
        self.shutdown()
        self.server_close()


class _HoldingHandler(socketserver.StreamRequestHandler):
    server: _HoldingSMTP

    def handle(self) -> None:
        say = self.wfile.write
        say(b"220 holding.loopback ESMTP\r\n")
        rcpt = ""
        for line in self.rfile:
            command = line.strip().decode()
            if command.upper().startswith(("EHLO", "HELO")):
                say(b"250 holding.loopback\r\n")
            elif command.upper().startswith(("MAIL", "RCPT", "RSET", "NOOP")):
                rcpt = (
                    command.partition("<")[2].rstrip(">") if command[:4].upper() == "RCPT" else rcpt
                )
                say(b"250 OK\r\n")
            elif command.upper() == "DATA":
                say(b"354 go ahead\r\n")
                data = b"".join(iter(self.rfile.readline, b".\r\n"))
                self.server.received.append((rcpt, data))
                self.server.release.wait(30)
                if self.server.closing:
                    return  # never answered
                say(b"250 OK queued\r\n")
            else:
                say(b"221 bye\r\n")
                return


def smtp_received(server: SMTPServer) -> Counter[str]:
    return Counter(r for m in server.messages for r in m.rcpt_tos)


def test_a_send_killed_mid_message_leaves_it_unknown_and_its_lock_blocks_nothing(
    tmp_path: Path,
) -> None:
    ws = workspace(tmp_path / "ws", 6, "smtp:\n  connections: 1\n")  # one message in flight
    holding = _HoldingSMTP()
    try:
        proc = start_send(ws, smtp_env(holding.port), "-p", "smtp", "--json")
        wait_for(lambda: len(holding.received) == 1, proc)  # the first message is in flight
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    finally:
        holding.stop()
    assert ledger_counts(ws) == {"pending": 1}
    lock = ws / ".newsletter" / "locks" / f"{ISSUE_ID}.lock"
    assert f"pid={proc.pid}" in lock.read_text()  # the file stays; the kernel dropped its lock
    with SMTPServer() as server:
        rerun = start_send(ws, smtp_env(server.port), "-p", "smtp", "--json")
        out, err = rerun.communicate(timeout=60)
        assert rerun.returncode == 0, err
        report = json.loads(out)
        assert (report["sent"], report["unknown_before"]) == (5, 1)
        # reader 0's message may have arrived: never guessed, so not sent again unasked
        assert smtp_received(server) == {f"reader{i:05d}@example.com": 1 for i in range(1, 6)}
        retry = start_send(ws, smtp_env(server.port), "-p", "smtp", "--json", "--retry-unknown")
        out, err = retry.communicate(timeout=60)
        assert retry.returncode == 0, err
        assert json.loads(out)["sent"] == 1
        assert smtp_received(server)["reader00000@example.com"] == 1
    assert ledger_counts(ws) == {"sent": 6}


def test_a_smtp_server_that_drops_before_storing_is_still_unknown(tmp_path: Path) -> None:
    """The client cannot tell a crash before the queue from a lost answer after it."""
    ws = workspace(tmp_path / "ws", 4, "smtp:\n  connections: 1\n")  # reader00000 is dropped
    with SMTPServer() as server:
        server.inject(drop(stored=False))
        cfg = load_config(ws / "newsletter.yaml", env=smtp_env(server.port))
        report = send_issue(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
        assert (report.sent, report.unknown) == (3, 1)
        rerun = send_issue(cfg, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
        assert (rerun.sent, rerun.unknown_before) == (0, 1)
        assert "reader00000@example.com" not in smtp_received(server)  # reported, never guessed


@pytest.mark.parametrize("provider", ["smtp", "sendgrid"])
def test_a_refused_connection_is_failed_and_the_next_run_sends_to_everyone_once(
    tmp_path: Path, provider: str
) -> None:
    ws = workspace(tmp_path / "ws", 12, "sendgrid:\n  batch_size: 5\n")
    dead = {
        "smtp": smtp_env(free_port()),
        "sendgrid": {
            "SENDGRID_API_KEY": API_KEY,
            "SENDGRID_API_HOST": f"http://127.0.0.1:{free_port()}",
            "NEWSLETTER_SECRET": SECRET,
        },
    }[provider]
    options = SendOptions(provider=provider, max_attempts=3, **FAST)
    with pytest.raises(SendStopped, match="gave up after 3 tries") as info:
        send_issue(
            load_config(ws / "newsletter.yaml", env=dead),
            ws / SAMPLE,
            ws / "list.csv",
            options,
            sleep=lambda s: None,
        )
    assert info.value.report.sent == 0
    # provably not delivered; SMTP marks each message as it leaves, and none left
    assert set(ledger_counts(ws)) == ({"failed"} if provider == "sendgrid" else set())
    with SendGridServer(API_KEY) as sendgrid, SMTPServer() as smtp:
        live = {"smtp": smtp_env(smtp.port), "sendgrid": sg_env(sendgrid)}[provider]
        report = send_issue(
            load_config(ws / "newsletter.yaml", env=live), ws / SAMPLE, ws / "list.csv", options
        )
        got = (
            smtp_received(smtp)
            if provider == "smtp"
            else Counter(d.email for d in sendgrid.deliveries())
        )
    assert report.sent == 12 and report.unknown_before == 0
    assert got == {f"reader{i:05d}@example.com": 1 for i in range(12)}
    assert ledger_counts(ws) == {"sent": 12}


# --- one send at a time -------------------------------------------------------------------


def test_a_second_send_of_the_same_issue_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", 5, "smtp:\n  connections: 1\n")  # one message in flight
    holding = _HoldingSMTP()
    try:
        first = start_send(ws, smtp_env(holding.port), "-p", "smtp", "--json")
        wait_for(lambda: len(holding.received) == 1, first)  # sending, and waiting for an answer
        second = start_send(ws, smtp_env(holding.port), "-p", "smtp", "--json")
        out, err = second.communicate(timeout=60)
        assert second.returncode == 1, (out, err)
        message = " ".join(err.decode().split())
        assert f"another `newsletter send` (pid {first.pid}, started " in message
        assert f"is sending issue {ISSUE_ID}; wait for it to finish or stop it" in message
        assert first.poll() is None and len(holding.received) == 1
        holding.release.set()
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
    finally:
        holding.stop()
    assert Counter(r for r, _ in holding.received) == {
        f"reader{i:05d}@example.com": 1 for i in range(5)
    }
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        assert len(ledger.sends(ISSUE_ID)) == 1  # the refused one never touched the ledger


# --- messages are printed as text, whatever they hold -------------------------------------


def test_brackets_in_an_issue_or_a_list_are_printed_as_text(ws: Path) -> None:
    write_issue(
        ws,
        "2025-08-08-x.yaml",
        "title: '[/x] Notes [bold]this[/bold] week'\n"
        "articles:\n  - {headline: H, summary: S, url: 'https://example.org/[/y]'}\n",
    )
    (ws / "brackets.csv").write_text("email,name\nnot-an-address [/z],Ann\nbob@example.com,Bob\n")
    send = cli("send", "issues/2025-08-08-x.yaml", "--to", "brackets.csv", "--yes", "--verbose")
    assert_clean_exit(send, 0)
    assert "[/x] Notes [bold]this[/bold] week" in said(send)
    assert "not-an-address [/z]" in said(send)
    write_issue(
        ws, "2025-08-08-y.yaml", "title: T\narticles:\n  - {headline: H, summary: S, url: '[/y]'}\n"
    )
    render = cli("render", "issues/2025-08-08-y.yaml")
    assert_clean_exit(render, 1)
    assert "not an absolute http(s) URL: '[/y]'" in said(render)
