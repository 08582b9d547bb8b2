"""The storage seam: suppressions and the audience in one store that CLI and service share."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from newsletter.cli import app
from newsletter.config import load_config
from newsletter.lists.audience import export_audience, import_audience
from newsletter.storage.store import Member, Suppression, open_store
from tests.sending import SECRET, readers, workspace
from tests.workspace import SAMPLE

ENV = {"NEWSLETTER_SECRET": SECRET}


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = workspace(tmp_path / "ws", 5)
    monkeypatch.chdir(root)
    return root


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV)


def suppressed(ws: Path) -> dict[str, str]:
    with open_store(load_config(ws / "newsletter.yaml")) as store:
        return {s.email: s.kind for s in store.suppressions()}


def test_an_old_workspace_suppressions_csv_is_imported_once(ws: Path) -> None:
    (ws / "suppressions.csv").write_text(
        "email,reason,added_at\n"
        "reader00001@example.com,unsubscribe request,2025-01-01T00:00:00+00:00\n"
        "reader00002@example.com,550 5.1.1 no such user,2025-01-02T00:00:00+00:00\n"
    )
    assert suppressed(ws) == {
        "reader00001@example.com": "unsubscribe",
        "reader00002@example.com": "bounce",
    }
    assert cli("audience", "resubscribe", "reader00001@example.com").exit_code == 0
    # The unchanged file is not imported again, so the resubscribe holds ...
    assert suppressed(ws) == {"reader00002@example.com": "bounce"}
    # ... and an edit of the file by hand counts again.
    with (ws / "suppressions.csv").open("a") as fh:
        fh.write("reader00003@example.com,asked by phone,2025-01-03T00:00:00+00:00\n")
    assert set(suppressed(ws)) == {
        "reader00001@example.com",
        "reader00002@example.com",
        "reader00003@example.com",
    }


def test_a_send_skips_every_suppression_whatever_wrote_it(ws: Path) -> None:
    (ws / "suppressions.csv").write_text("email,reason\nreader00000@example.com,bounce\n")
    assert cli("unsubscribe", "reader00001@example.com").exit_code == 0  # a plain address
    with open_store(load_config(ws / "newsletter.yaml")) as store:
        store.suppress([Suppression("READER00002@example.com", "spamreport", "complaint")])
    dry = cli("send", SAMPLE, "--to", "list.csv", "--dry-run", "--json")
    assert '"suppressed": 3' in dry.output, dry.output
    result = cli("send", SAMPLE, "--to", "list.csv", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert '"sent": 2' in result.output and '"suppressed": 3' in result.output


def test_the_audience_round_trips_through_csv_without_loss(ws: Path, tmp_path: Path) -> None:
    (ws / "people.csv").write_text(
        "email,name,status,tags,city,consent_asked_at,consent_confirmed_at,consent_source,"
        "consent_ip\n"
        "ada@example.org,Ada,subscribed,a;b,London,2025-01-01T00:00:00+00:00,"
        "2025-01-01T00:05:00+00:00,archive form,192.0.2.1\n"
        'bob@example.org,"Bob, Jr.",bounced,,Paris,,,,\n'
        "cy@example.org,Cy,pending,,,2025-02-01T00:00:00+00:00,,archive form,192.0.2.9\n"
    )
    assert cli("audience", "import", "people.csv").exit_code == 0
    assert cli("audience", "export", "out.csv").exit_code == 0
    first = (ws / "out.csv").read_text()
    assert "Ada,subscribed,a;b,2025-01-01T00:00:00+00:00,2025-01-01T00:05:00+00:00" in first
    assert '"Bob, Jr.",bounced' in first
    other = workspace(tmp_path / "other", 0)
    with open_store(load_config(other / "newsletter.yaml")) as store:
        assert import_audience(store, ws / "out.csv").added == 3
        export_audience(store, other / "again.csv")
    assert (other / "again.csv").read_text() == first


def test_add_remove_resubscribe_and_a_send_to_the_audience(ws: Path) -> None:
    assert cli("audience", "add", "ada@example.org", "--name", "Ada").exit_code == 0
    assert cli("audience", "add", "bob@example.org").exit_code == 0
    assert cli("audience", "remove", "bob@example.org").exit_code == 0
    listed = cli("audience", "list").output
    assert "ada@example.org,Ada,subscribed" in listed and "bob@example.org,,unsubscribed" in listed
    refused = cli("audience", "add", "bob@example.org")
    assert refused.exit_code == 2 and "audience resubscribe" in refused.output
    sent = cli("send", SAMPLE, "--yes", "--json")  # no --to: the audience
    assert sent.exit_code == 0, sent.output
    assert '"sent": 1' in sent.output
    assert cli("audience", "resubscribe", "bob@example.org").exit_code == 0
    again = cli("send", SAMPLE, "--yes", "--json")
    assert '"sent": 1' in again.output and '"already_sent": 1' in again.output


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from newsletter.config import load_config
    from newsletter.storage.store import Member, Suppression, open_store
    config = load_config(Path(sys.argv[1]))
    who, n = sys.argv[2], int(sys.argv[3])
    for i in range(n):
        with open_store(config) as store:  # a request of the service: open, write, close
            store.suppress([Suppression(f"{who}{i}@example.net", "web", "unsubscribe")])
            store.put_member(Member(f"{who}{i}@example.org", name=f"{who} {i}"))
    """
)


def test_a_send_and_service_writes_at_the_same_moment_lose_nothing(ws: Path) -> None:
    (ws / "list.csv").write_text(readers(600))
    env = {**os.environ, **ENV}
    send = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "send", SAMPLE, "--to", "list.csv", "--yes", "--json"],
        cwd=ws,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(ws / "newsletter.yaml"), who, "60"], env=env
        )
        for who in ("a", "b")
    ]
    out, err = send.communicate(timeout=120)
    assert send.returncode == 0, err
    assert all(w.wait(timeout=120) == 0 for w in writers)
    assert '"sent": 600' in out
    with open_store(load_config(ws / "newsletter.yaml")) as store:
        assert len(list(store.suppressions())) == 120
        assert len(list(store.members())) == 120
        assert store.ledger().counts("2025-08-01-north-korea", rehearsal=True)["sent"] == 600
        assert store.member("b59@example.org") == Member(
            "b59@example.org",
            name="b 59",
            updated_at=store.member("b59@example.org").updated_at,  # type: ignore[union-attr]
        )


def test_a_confirmed_signup_lifts_an_unsubscribe_but_never_a_bounce(ws: Path) -> None:
    from newsletter.storage.store import Signup

    with open_store(load_config(ws / "newsletter.yaml")) as store:
        store.suppress(
            [
                Suppression("left@example.org", "unsubscribe request", "unsubscribe"),
                Suppression("gone@example.org", "550 no such user", "bounce"),
            ]
        )
        for n, address in enumerate(("left@example.org", "gone@example.org")):
            store.begin_signup(Signup(f"n{n}", address, "", "2025-01-01", "form", "192.0.2.1"))
        left = store.confirm_signup("n0", "2025-01-02")
        gone = store.confirm_signup("n1", "2025-01-02")
        assert left is not None and left.status == "subscribed"
        assert store.suppression("left@example.org") is None
        assert gone is not None and store.member("gone@example.org").status == "bounced"  # type: ignore[union-attr]
        assert store.suppression("gone@example.org") is not None
        assert store.confirm_signup("n0", "2025-01-03") is None  # a link works once
