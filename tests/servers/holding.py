"""An SMTP server that takes each message and holds back its answer until the test sets
`release` (then answers 250): whoever sends through it is mid-request meanwhile.

    holding = HoldingSMTP()
    try:
        ...  # a send through 127.0.0.1:holding.port; holding.received fills as messages arrive
        holding.release.set()
    finally:
        holding.stop()  # messages still held are never answered
"""

from __future__ import annotations

import socketserver
import threading


class HoldingSMTP(socketserver.ThreadingTCPServer):
    """Answers each message only once `release` is set; `received` holds (recipient, data)."""

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
    server: HoldingSMTP

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
