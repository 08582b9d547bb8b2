"""Benchmark: a new TLS connection per SendGrid request (the SDK) against one reused.

Run by hand: `.venv/bin/python bench/tls_reuse.py [--requests N]`. A TLS-terminating
HTTP/1.1 server (stdlib `ssl`, a self-signed certificate made at run time with `openssl`)
answers each POST 150 ms late, in a process of its own. The same 800 KB body is posted
with four requests out at once:

    sdk       `SendGridAPIClient(...).client.mail.send.post`, as the provider does today:
              urllib opens a connection, and a TLS handshake, per request
    reused    `http.client.HTTPSConnection`, one per thread, kept open

each straight to the server and through bench/latency_proxy.py (25 ms each way, so a
handshake costs the round trips it costs over the internet). Prints requests/s, medians
of 3, interleaved.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LATENCY = 0.150
THREADS = 4
BODY = b'{"personalizations": [' + b"x" * 800_000 + b"]}"


def serve(cert: str, key: str) -> None:
    """The server process: prints its port, answers every POST 202 after LATENCY s."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(LATENCY)
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def certificate(folder: Path) -> tuple[str, str]:
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key),
            *("-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def run_sdk(port: int, requests: int) -> float:
    from sendgrid import SendGridAPIClient

    def one(_: int) -> None:
        client = SendGridAPIClient(api_key="SG.bench", host=f"https://127.0.0.1:{port}")
        response = client.client.mail.send.post(request_body=BODY.decode())
        assert response.status_code == 202

    return timed(one, requests)


def run_reused(port: int, requests: int, cafile: str) -> float:
    context = ssl.create_default_context(cafile=cafile)
    local = threading.local()

    def one(_: int) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPSConnection("127.0.0.1", port, context=context)
        conn.request(
            "POST", "/v3/mail/send", body=BODY, headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        response.read()
        assert response.status == 202

    return timed(one, requests)


def timed(one: object, requests: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(requests)))  # type: ignore[arg-type]
    return requests / (time.perf_counter() - start)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cert, key = certificate(Path(folder))
        os.environ["SSL_CERT_FILE"] = cert  # urllib's default context trusts it
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", cert, key], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        port = int(server.stdout.readline())
        far = free_port()
        proxy = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("latency_proxy.py")),
                str(far),
                f"127.0.0.1:{port}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proxy.stdout is not None and proxy.stdout.readline().strip() == "ready"
        rates: dict[str, list[float]] = {}
        try:
            for i in range(3):
                for where, p in (("local", port), ("50 ms away", far)):
                    for name, run in (
                        (
                            "sdk: a new connection per request",
                            lambda p=p: run_sdk(p, args.requests),
                        ),
                        ("reused connections", lambda p=p: run_reused(p, args.requests, cert)),
                    ):
                        rates.setdefault(f"{name}, {where}", []).append(run())
                print(f"  round {i + 1}/3 done", flush=True)
        finally:
            proxy.terminate()
            server.terminate()
    print(
        f"\n{THREADS} requests out, answers {LATENCY * 1000:.0f} ms late, {len(BODY):,} B bodies\n"
    )
    print("| client | requests/s (median of 3) | runs |\n|---|---|---|")
    for name, values in rates.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {statistics.median(values):.1f} | {runs} |")


if __name__ == "__main__":
    main()
