"""The errors a person can act on, and the exit codes the CLI turns them into.

    NewsletterError                 anything the user can fix; the CLI prints one line
    ├── UsageError                  wrong arguments or a missing file            (exit 2)
    ├── ConfigError                 newsletter.yaml or the environment           (exit 1)
    ├── IssueError                  an issue file: carries every Problem found   (exit 1)
    ├── TemplateError               a template that is missing or fails          (exit 1)
    ├── SubscribersError            a subscriber list that cannot be read        (exit 1)
    ├── LedgerError                 the ledger, or a send already running        (exit 1)
    ├── ProviderError               the provider refused or failed               (exit 3)
    │   ├── PermanentProviderError  fix something before sending again (400/401/403/413)
    │   ├── TransientProviderError  worth retrying: 429, 5xx, refused connections
    │   └── UnknownOutcomeError     the request left us but no answer came back
    └── RequestRefused              the reader service refuses a request (an HTTP 4xx/5xx)

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    PROVIDER = 3
    INTERRUPTED = 130


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


class IssueError(NewsletterError):
    """An issue file with one or more problems, all of them reported at once."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class TemplateError(NewsletterError):
    pass


class SubscribersError(NewsletterError):
    pass


class LedgerError(NewsletterError):
    pass


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


class UnknownOutcomeError(ProviderError):
    """The request was sent but no answer came: it may or may not have been delivered."""


class RequestRefused(NewsletterError):
    """`newsletter serve` refuses a request: the HTTP status and a sentence for the reader."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)
