"""A real IMAP server on 127.0.0.1: Dovecot (Debian's dovecot-imapd), IMAPS only.

    with DovecotServer() as server:
        url = server.new_folder("Bounces")             # imaps://bounces@127.0.0.1:PORT/Bounces
        server.append(raw_bytes, "Bounces")            # deliver a message there
        context = server.ssl_context()                 # trusts the throwaway CA

It runs as a subprocess with a config file written to a temporary folder: a passwd-file
with one user, Maildir storage, and a server certificate from a CA made by `trustme` at
start. As root, Dovecot's login processes run as `dovenull` and the mail as `dovecot`
(the Debian package makes both users); otherwise everything runs as the current user.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import trustme
from imapclient import IMAPClient

USER = "bounces"
PASSWORD = "imap-test-password-0123"
START_TIMEOUT_S = 15.0
#: Dovecot cannot bind port 0 and report it: a port is picked here, and picked again if
#: another test's server (pytest-xdist runs two workers) took it before Dovecot started.
PORT_ATTEMPTS = 5


class PortTaken(RuntimeError):
    """Someone bound the port between `_free_port()` and Dovecot's start."""


def dovecot_binary() -> str:
    found = shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot",) if Path(p).exists()), None
    )
    if found is None:
        raise RuntimeError(
            "dovecot is not installed: `apt-get install dovecot-imapd` (Debian) for the IMAP tests"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DovecotServer:
    def __init__(self) -> None:
        self.port = 0
        self._ca = trustme.CA()
        self._process: subprocess.Popen[bytes] | None = None
        # Unix socket paths must stay short, and mail must be reachable by the mail user.
        self._run = Path(tempfile.mkdtemp(prefix="dovecot-"))
        self._run.chmod(0o755)

    @property
    def url(self) -> str:
        return self.folder_url("INBOX")

    def folder_url(self, folder: str) -> str:
        return f"imaps://{USER}@127.0.0.1:{self.port}/{folder}"

    def new_folder(self, name: str) -> str:
        """Make a folder (one per test, so one server serves many) and return its URL."""
        client = self.client()
        try:
            client.create_folder(name)
        finally:
            client.logout()
        return self.folder_url(name)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context

    def ca_file(self) -> Path:
        path = self._run / "ca.pem"
        self._ca.cert_pem.write_to_path(str(path))
        return path

    def client(self) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.port, ssl=True, ssl_context=self.ssl_context())
        client.login(USER, PASSWORD)
        return client

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        client = self.client()
        try:
            client.append(folder, raw)
        finally:
            client.logout()

    def start(self) -> DovecotServer:
        binary = dovecot_binary()
        run = self._run
        mail = run / "mail"
        mail.mkdir()
        cert = self._ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_and_cert_chain_pem.write_to_path(str(run / "server.pem"))
        (run / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::{mail}\n")
        if os.getuid() == 0:
            internal, login = "dovecot", "dovenull"
            uid, gid = pwd.getpwnam("dovecot").pw_uid, grp.getgrnam("dovecot").gr_gid
            os.chown(mail, uid, gid)
        else:
            internal = login = pwd.getpwuid(os.getuid()).pw_name
            uid, gid = os.getuid(), os.getgid()
        group = grp.getgrgid(gid).gr_name
        for attempt in range(PORT_ATTEMPTS):
            self.port = _free_port()
            (run / "dovecot.log").unlink(missing_ok=True)
            (run / "dovecot.conf").write_text(
                f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {run}/base
state_dir = {run}/state
log_path = {run}/dovecot.log
default_internal_user = {internal}
default_internal_group = {group if os.getuid() != 0 else "dovecot"}
default_login_user = {login}
first_valid_uid = 1
ssl = required
ssl_cert = <{run}/server.pem
ssl_key = <{run}/server.pem
auth_mechanisms = plain
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {run}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail}
}}
mail_location = maildir:{mail}/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {self.port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""
            )
            self._process = subprocess.Popen(
                [binary, "-F", "-c", str(run / "dovecot.conf")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            try:
                self._wait_until_up()
                return self
            except PortTaken:
                self._stop()
                if attempt == PORT_ATTEMPTS - 1:
                    self.close()
                    raise
        raise AssertionError("unreachable")

    def _wait_until_up(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                log = self._run / "dovecot.log"
                err += log.read_text() if log.exists() else ""
                taken = "Address already in use" in err
                raise (PortTaken if taken else RuntimeError)(f"dovecot exited at start: {err}")
            try:  # a TLS handshake with our own CA: not some other server on this port
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock,
                    self.ssl_context().wrap_socket(sock, server_hostname="127.0.0.1"),
                ):
                    return
            except OSError:
                time.sleep(0.05)
        self.close()
        raise RuntimeError(f"dovecot did not listen on 127.0.0.1:{self.port}")

    def _stop(self) -> None:
        if self._process is not None:
            # The whole process group at once: a throwaway server whose folder is removed
            # next has nothing to save, and SIGTERM made its master wait 1 to 6 s for its
            # children.
            with contextlib.suppress(ProcessLookupError):  # a start that failed: gone already
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
            if self._process.stderr:
                self._process.stderr.close()
            self._process = None

    def close(self) -> None:
        self._stop()
        shutil.rmtree(self._run, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
