"""Writes tests/data/ledger-v2.sqlite: a schema-2 ledger, made by newsletter's own Ledger.

Made with the code of commit 591be1c (the last with ledger schema 2), from the repository
root (this script is newer than that commit, so it runs from here against that checkout):

    git worktree add /tmp/v2 591be1c
    rm -f tests/data/ledger-v2.sqlite
    PYTHONPATH=/tmp/v2 .venv/bin/python tests/data/ledger-v2.py tests/data/ledger-v2.sqlite

It holds every state a row can be in: sent (with a provider id), rejected, failed, unknown,
a batch left pending by a killed process, SMTP's per-message marks, a rehearsal (outbox)
beside a real delivery of the same reader, two issues, and straße@ beside strasse@.
tests/test_ledger_migration.py copies it and checks that every row survives the migration.
"""

import sys
from pathlib import Path

from newsletter.storage.ledger import Ledger, Manifest


def manifest(issue: str, provider: str) -> Manifest:
    return Manifest(
        issue=issue,
        issue_path=f"issues/{issue}.yaml",
        issue_sha256="a" * 64,
        templates_sha256="b" * 64,
        list_path="subscribers.csv",
        list_sha256="c" * 64,
        provider=provider,
        tool_version="0.1.0",
    )


def main(out: Path) -> None:
    first, second = "2025-08-01-first", "2025-09-01-second"
    with Ledger(out) as ledger:
        rehearsal = ledger.start_send(manifest(first, "outbox"))
        ledger.finish_batch(
            ledger.begin_batch(rehearsal, first, [("ann@example.org", "Ann@Example.org")]), "sent"
        )
        ledger.finish_send(rehearsal, status="finished", counts={"sent": 1})

        send = ledger.start_send(manifest(first, "sendgrid"))
        batch = ledger.begin_batch(
            send,
            first,
            [
                ("ann@example.org", "Ann@Example.org"),
                ("straße@example.org", "Straße@example.org"),
                ("strasse@example.org", "strasse@example.org"),
                ("rex@example.org", "rex@example.org"),
            ],
        )
        ledger.finish_batch(
            batch, "sent", provider_id="sg-1", rejected={"rex@example.org": "550 no such user"}
        )
        failed = ledger.begin_batch(send, first, [("fay@example.org", "fay@example.org")])
        ledger.finish_batch(failed, "failed", error="503 try later")
        lost = ledger.begin_batch(send, first, [("una@example.org", "una@example.org")])
        ledger.finish_batch(lost, "unknown", error="timed out")
        # a retry that took over the failed row, then was sent
        retry = ledger.begin_batch(
            send, first, [("fay@example.org", "fay@example.org"), ("gus@example.org", "gus@x.org")]
        )
        ledger.finish_batch(retry, "sent", provider_id="sg-2")
        ledger.finish_send(send, status="finished", counts={"sent": 5})

        smtp = ledger.start_send(manifest(second, "smtp"))
        opened = ledger.open_batch(smtp, second, 3)
        ledger.mark_messages(second, [(opened, "ann@example.org", "Ann@Example.org")])
        ledger.mark_messages(
            second,
            [(opened, "bob@example.org", "bob@example.org")],
            [(opened, "ann@example.org", "<1@smtp>")],
        )
        ledger.finish_batch(
            opened, "unknown", each={"bob@example.org": ("unknown", None, "no reply after DATA")}
        )
        # a process killed mid-request: left pending, for recover() to find
        ledger.begin_batch(smtp, second, [("cy@example.org", "cy@example.org")])
        ledger.checkpoint()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
