"""The bounce mailbox: a Maildir, an mbox file, or an IMAP folder, read and marked.

    open_mailbox("~/Maildir/.Bounces", env)            a Maildir (new/, cur/, tmp/)
    open_mailbox("/var/mail/bounces", env)             an mbox file
    open_mailbox("imaps://bounces@mail.example.org/INBOX", env)
                                                       an IMAP folder over TLS; the password
                                                       from NEWSLETTER_IMAP_PASSWORD

Each message is handed out once per run with a stable `key` (a hash of its Message-ID, or
of its bytes when it has none); the caller remembers keys it has processed, which is what
makes a rerun count nothing twice. Marks are for people and for speed: a Maildir message
moves to cur/ with the Seen flag, an IMAP message gets \\Seen and the keyword
`NewsletterProcessed` (and is not fetched again); an mbox file is never rewritten.

IMAP goes through `imapclient` rather than bare imaplib: it parses FETCH responses and
flags into Python values and speaks UIDs throughout, where imaplib hands back raw
protocol tuples for us to pick apart.
"""

from __future__ import annotations

import hashlib
import mailbox
import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from newsletter.errors import MailboxError, UsageError

PASSWORD_ENV = "NEWSLETTER_IMAP_PASSWORD"
#: A PEM file of CA certificates to trust for the IMAP server (a private CA, say).
CA_FILE_ENV = "NEWSLETTER_IMAP_CA_FILE"
KEYWORD = "NewsletterProcessed"
IMAP_TIMEOUT = 60.0
FETCH_CHUNK = 100


@dataclass(frozen=True)
class Returned:
    """One message in the bounce mailbox."""

    key: str
    raw: bytes
    ref: str | int


class Mailbox(Protocol):
    label: str

    def messages(self) -> Iterator[Returned]: ...

    def mark(self, item: Returned) -> None: ...

    def close(self) -> None: ...


def message_key(raw: bytes) -> str:
    """A processed-message key: the Message-ID's hash, else the whole message's."""
    head = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    for line in head.splitlines():
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"message-id" and value.strip():
            return "mid:" + hashlib.sha256(value.strip()).hexdigest()
    return "raw:" + hashlib.sha256(raw).hexdigest()


class MaildirMailbox:
    def __init__(self, path: Path) -> None:
        self.label = str(path)
        self._box = mailbox.Maildir(path, factory=None, create=False)

    def messages(self) -> Iterator[Returned]:
        for key in sorted(self._box.keys()):
            message = self._box.get_message(key)
            if message.get_subdir() == "cur" and "S" in message.get_flags():
                continue  # marked by an earlier run (or read by a person: the key decides)
            raw = self._box.get_bytes(key)
            yield Returned(message_key(raw), raw, key)

    def mark(self, item: Returned) -> None:
        message = self._box.get_message(str(item.ref))
        message.set_subdir("cur")
        message.add_flag("S")
        self._box[str(item.ref)] = message

    def close(self) -> None:
        self._box.close()


class MboxMailbox:
    def __init__(self, path: Path) -> None:
        self.label = str(path)
        self._box = mailbox.mbox(path, create=False)

    def messages(self) -> Iterator[Returned]:
        for key in self._box.iterkeys():
            raw = self._box.get_bytes(key)
            yield Returned(message_key(raw), raw, key)

    def mark(self, item: Returned) -> None:
        """Nothing: an mbox is never rewritten; processed keys are remembered instead."""

    def close(self) -> None:
        self._box.close()


class ImapMailbox:
    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        folder: str,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        from imapclient import IMAPClient
        from imapclient.exceptions import IMAPClientError, LoginError

        self.label = f"imaps://{user}@{host}:{port}/{folder}"
        try:
            self._client = IMAPClient(
                host,
                port=port,
                ssl=True,
                ssl_context=ssl_context or ssl.create_default_context(),
                timeout=IMAP_TIMEOUT,
            )
        except (OSError, IMAPClientError) as exc:
            raise MailboxError(f"{self.label}: cannot connect: {exc}") from None
        try:
            self._client.login(user, password)
            self._client.select_folder(folder)
        except LoginError:
            self._client.shutdown()
            raise MailboxError(
                f"{self.label}: the server refused the login; check the user and {PASSWORD_ENV}"
            ) from None
        except (OSError, IMAPClientError) as exc:
            self._client.shutdown()
            raise MailboxError(f"{self.label}: {exc}") from None

    def messages(self) -> Iterator[Returned]:
        uids: Sequence[int] = self._client.search(["UNKEYWORD", KEYWORD])
        for start in range(0, len(uids), FETCH_CHUNK):
            chunk = list(uids[start : start + FETCH_CHUNK])
            fetched = self._client.fetch(chunk, ["BODY.PEEK[]"])
            for uid in chunk:
                raw = fetched.get(uid, {}).get(b"BODY[]")
                if isinstance(raw, bytes):
                    yield Returned(message_key(raw), raw, uid)

    def mark(self, item: Returned) -> None:
        self._client.add_flags([int(item.ref)], [b"\\Seen", KEYWORD.encode()])

    def close(self) -> None:
        try:
            self._client.logout()
        except OSError:
            self._client.shutdown()


def open_mailbox(
    spec: str, env: Mapping[str, str], *, ssl_context: ssl.SSLContext | None = None
) -> Mailbox:
    """The mailbox `spec` names: imaps:// URL, a Maildir folder, or an mbox file."""
    if "://" in spec:
        return _imap(spec, env, ssl_context)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "cur").is_dir() or not (path / "new").is_dir():
            raise UsageError(f"{path}: a folder, but not a Maildir (it has no cur/ and new/)")
        return MaildirMailbox(path)
    if path.is_file():
        return MboxMailbox(path)
    raise UsageError(
        f"{spec}: no such mailbox; give a Maildir folder, an mbox file, or "
        "imaps://USER@HOST[:PORT]/FOLDER"
    )


def _imap(spec: str, env: Mapping[str, str], context: ssl.SSLContext | None) -> ImapMailbox:
    url = urlsplit(spec)
    if url.password is not None:
        raise UsageError(f"the password does not go in the URL; set {PASSWORD_ENV}")
    if url.scheme != "imaps":
        raise UsageError(
            f"{spec}: only imaps:// (IMAP over TLS) is supported, so the password never "
            "crosses the network in the clear"
        )
    if not url.hostname or not url.username:
        raise UsageError(f"{spec}: give the user and host, as imaps://USER@HOST[:PORT]/FOLDER")
    password = env.get(PASSWORD_ENV, "")
    if not password:
        raise UsageError(f"{PASSWORD_ENV} is not set; export the bounce mailbox's password")
    try:
        port = url.port or 993
    except ValueError:
        raise UsageError(f"{spec}: the port is not a number") from None
    folder = unquote(url.path.lstrip("/")) or "INBOX"
    if context is None and env.get(CA_FILE_ENV):
        try:
            context = ssl.create_default_context(cafile=env[CA_FILE_ENV])
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"{CA_FILE_ENV}={env[CA_FILE_ENV]}: {exc}") from None
    return ImapMailbox(url.hostname, port, unquote(url.username), password, folder, context)
