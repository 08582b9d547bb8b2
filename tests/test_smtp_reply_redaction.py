"""A server's reply that echoes a secret is redacted before it is cut short: cut first, the
end of the secret is gone and what is left of it goes unrecognised into the ledger."""

from __future__ import annotations

from pathlib import Path

from newsletter.delivery.send import SendOptions, send_issue
from newsletter.storage.ledger import Ledger
from newsletter.storage.store import open_store
from tests.sending import ISSUE_ID, config, workspace
from tests.servers.smtp_pipelining import PipeliningServer
from tests.workspace import SAMPLE

PASSWORD = "Qv7sekrit-pass-4242"


def test_a_secret_at_the_cut_of_a_long_reply_is_not_kept(tmp_path: Path) -> None:
    # 300 characters of the reply's text (after its code) are kept: cut there, 4 characters
    # of the password would be left, too few for redact to know them for a piece of it
    padding = "x" * (300 - 4)
    echo = {"reader00001@example.com": f"550 {padding}{PASSWORD} rest of the line"}
    ws = workspace(tmp_path / "ws", 3)
    with PipeliningServer(rcpt_replies=echo) as server:
        env = {
            "SMTP_HOST": server.host,
            "SMTP_PORT": str(server.port),
            "SMTP_SECURITY": "none",
            "SMTP_PASSWORD": PASSWORD,  # no SMTP_USER: no login, but a secret all the same
        }
        options = SendOptions(provider="smtp", backoff=0.0, max_backoff=0.0)
        report = send_issue(config(ws, env), ws / SAMPLE, ws / "list.csv", options)
    assert (report.sent, report.rejected) == (2, 1)
    with Ledger(ws / ".newsletter" / "ledger.sqlite") as ledger:
        (row,) = ledger.deliveries(ISSUE_ID, "rejected")
    error = row.error or ""
    assert error.startswith("550 xxx") and "[red" in error
    assert PASSWORD[:4] not in error
    with open_store(config(ws, {})) as store:
        [suppressed] = store.suppressions()
    assert suppressed.reason.startswith("550 xxx")
    assert PASSWORD[:4] not in suppressed.reason
