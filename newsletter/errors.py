"""The errors a person can act on, and the exit codes the CLI turns them into.

    NewsletterError                 anything the user can fix; the CLI prints one line
    ├── UsageError                  wrong arguments or a missing file            (exit 2)
    ├── ConfigError                 newsletter.yaml or the environment           (exit 1)
    ├── ProblemList                 a YAML file: carries every Problem found     (exit 1)
    │   └── IssueError              ... and that file is an issue
    ├── TemplateError               a template that is missing or fails          (exit 1)
    ├── HeaderError                 a header value that would break the message  (exit 1)
    ├── SubscribersError            a subscriber list that cannot be read        (exit 1)
    ├── TokenError                  an unsubscribe token that is malformed       (exit 1)
    │   └── ForeignTokenError       ... or not made by this list's secret
    ├── LedgerError                 the ledger, or a send already running        (exit 1)
    ├── FetchError                  a page or feed `add` could not use: one line (exit 1)
    ├── MailboxError                a bounce mailbox that cannot be read         (exit 1)
    ├── OutputError                 a file a send writes cannot be written       (exit 1)
    ├── SendRefused                 a real send refused before mailing anyone    (exit 1)
    ├── NothingSent                 a send that mailed nobody; carries its Report (exit 4)
    ├── NoSendError                 `status` of an issue the ledger never saw    (exit 1)
    ├── WouldOverwrite              `init`/`new` found a file where it would write (exit 1)
    ├── RequestRefused              the reader service refuses a request (an HTTP 4xx/5xx)
    └── ProviderError               the provider refused or failed               (exit 3)
        ├── PermanentProviderError  fix something before sending again (400/401/403/413)
        ├── TransientProviderError  worth retrying: 429, 5xx, refused connections
        ├── UnknownOutcomeError     the request left us but no answer came back
        ├── RateLimitReached        the provider's cap (a daily one): says when to resume
        └── SendStopped             a send stopped part way; carries its Report
            └── SendInterrupted     stopped by Ctrl-C or SIGTERM           (exit 130 / 143)

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from newsletter.delivery.report import Report


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    PROVIDER = 3
    #: The send mailed nobody: every row skipped, no one with the --tag, every outcome
    #: unknown or failed. ("Already sent to everyone" is a success.)
    NOTHING_SENT = 4
    #: Ctrl-C (SIGINT): 128 + 2, as shells report it.
    INTERRUPTED = 130
    #: SIGTERM (a `kill`, a service manager stopping the job): 128 + 15.
    TERMINATED = 143


class NewsletterError(Exception):
    """Base class: the message is what the user reads, so it says what to do."""

    exit_code: ExitCode = ExitCode.ERROR


class UsageError(NewsletterError):
    exit_code = ExitCode.USAGE


class ConfigError(NewsletterError):
    pass


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file, where it is, and what is wrong."""

    path: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ProblemList(NewsletterError):
    """A YAML file with one or more problems, all of them reported at once.

    A user error like any other, so that one escaping a loader still prints as lines
    with file:line:field rather than a traceback; loaders re-raise it as the error of
    the file they read (`IssueError`, or a `ConfigError` for newsletter.yaml).
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class IssueError(ProblemList):
    """An issue file with one or more problems, all of them reported at once."""


class TemplateError(NewsletterError):
    pass


class HeaderError(NewsletterError):
    """A header value with a line break (it would end its header early), a control
    character, or text that cannot be encoded."""


class SubscribersError(NewsletterError):
    pass


class TokenError(NewsletterError):
    pass


class ForeignTokenError(TokenError):
    """Well formed, but not made by this list's secret: another list's, or a forgery."""


class LedgerError(NewsletterError):
    pass


class FetchError(NewsletterError):
    """A page or feed that could not be fetched or used; `add` reports it and goes on."""


class MailboxError(NewsletterError):
    """A bounce mailbox (Maildir, mbox, IMAP) that is missing, refused us, or went away."""


class OutputError(NewsletterError):
    """A file the send writes (build/, suppressions.csv) cannot be written: a full disk."""


class SendRefused(NewsletterError):
    """A real send refused before anyone was mailed; the message says what overrides it."""


class NoSendError(NewsletterError):
    """Nothing is recorded for that issue (or no ledger at all)."""


class WouldOverwrite(NewsletterError):
    """A file is already where a new one would go; nothing was written."""


class ProviderError(NewsletterError):
    exit_code = ExitCode.PROVIDER

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class PermanentProviderError(ProviderError):
    """The provider will refuse this again: stop and tell the user what to fix."""


class TransientProviderError(ProviderError):
    """Nothing was accepted; the same request may succeed later."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status)


class RateLimitReached(ProviderError):
    """The configured cap (`rate_limit`) leaves no room for hours: stop, say when to resume."""

    def __init__(self, message: str, *, resume_at: datetime) -> None:
        self.resume_at = resume_at
        super().__init__(message)


class UnknownOutcomeError(ProviderError):
    """The request was sent but no answer came: it may or may not have been delivered."""


class RequestRefused(NewsletterError):
    """`newsletter serve` refuses a request: the HTTP status and a sentence for the reader."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class SendStopped(ProviderError):
    """The send stopped part way; the report says who got the issue and who did not."""

    def __init__(self, message: str, report: Report) -> None:
        self.report = report
        super().__init__(message)


class SendInterrupted(SendStopped):
    """Ctrl-C or SIGTERM: no new batch was taken and the requests out were settled."""

    def __init__(self, message: str, report: Report, exit_code: ExitCode) -> None:
        super().__init__(message, report)
        self.exit_code = exit_code


class NothingSent(NewsletterError):
    """The send ended without mailing anyone; the report says why (skipped, unknown...)."""

    exit_code = ExitCode.NOTHING_SENT

    def __init__(self, message: str, report: Report) -> None:
        self.report = report
        super().__init__(message)
