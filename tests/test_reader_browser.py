"""A reader in a real browser: the unsubscribe link of a mail sent over SMTP, clicked in
headless Chromium (Debian's /usr/bin/chromium, driven by Playwright), and the next send."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import sync_playwright

from newsletter.config import load_config
from newsletter.delivery.send import SendOptions, send_issue
from tests.sending import SECRET, readers
from tests.servers.reader import serving
from tests.servers.smtp import SMTPServer
from tests.test_reader_service import write_service_config
from tests.workspace import SAMPLE, make_workspace

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def test_a_reader_unsubscribes_in_a_browser_and_the_next_send_skips_them(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    ws = make_workspace(tmp_path / "ws")
    (ws / "list.csv").write_text(readers(3))
    env = {
        "NEWSLETTER_SECRET": SECRET,
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
    }
    with (
        serving(ws, env, lambda port: write_service_config(ws, port)) as server,
        sync_playwright() as playwright,
    ):
        config = load_config(ws / "newsletter.yaml", env=env)  # names the service's port
        send_issue(config, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
        [mail] = [m.message for m in smtp_server.messages if "reader00001" in str(m.message["To"])]
        text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        link = re.search(r"Unsubscribe: (\S+)", text)
        assert link and link[1].startswith(f"{server.url}/unsubscribe?token=")

        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            page.goto(link[1])
            assert "reader00001@example.com" in page.inner_text("main")
            page.get_by_role("button", name="Unsubscribe").click()
            page.wait_for_selector("text=You are unsubscribed")
            assert page.get_by_role("button", name="Subscribe me again").is_visible()
        finally:
            browser.close()

    (ws / "list.csv").write_text(readers(3) + "newcomer@example.com,New\n")
    before = len(smtp_server.messages)
    report = send_issue(config, ws / SAMPLE, ws / "list.csv", SendOptions(provider="smtp"))
    assert report.sent == 1
    assert [str(m.message["To"]) for m in smtp_server.messages[before:]] == [
        "New <newcomer@example.com>"
    ]
