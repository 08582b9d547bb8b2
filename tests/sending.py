"""Shared set-up for the send tests: a workspace, a list of N readers, an environment."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.config import Config, load_config
from newsletter.delivery.send import Report, SendOptions, send_issue
from tests.workspace import SAMPLE, make_workspace

if TYPE_CHECKING:
    from tests.servers.sendgrid import SendGridServer

SECRET = "s3cr3t-token-key-for-tests-0123456789"
ISSUE_ID = "2025-08-01-north-korea"


def readers(n: int, domain: str = "example.com") -> str:
    rows = "".join(f"reader{i:05d}@{domain},Reader {i}\n" for i in range(n))
    return "email,name\n" + rows


def workspace(root: Path, n: int, extra_config: str = "") -> Path:
    ws = make_workspace(root)
    (ws / "list.csv").write_text(readers(n), encoding="utf-8")
    if extra_config:
        with (ws / "newsletter.yaml").open("a", encoding="utf-8") as fh:
            fh.write(extra_config)
    return ws


def config(ws: Path, env: Mapping[str, str]) -> Config:
    return load_config(ws / "newsletter.yaml", env={"NEWSLETTER_SECRET": SECRET, **env})


def sg_env(server: SendGridServer) -> dict[str, str]:
    return {"SENDGRID_API_KEY": server.api_key, "SENDGRID_API_HOST": server.url}


def sg_send(
    ws: Path,
    server: SendGridServer,
    *,
    sleep: Callable[[float], None] = time.sleep,
    **options: Any,
) -> Report:
    """The workspace's sample issue to its list.csv through SendGrid (at `server`)."""
    cfg = config(ws, sg_env(server))
    chosen = SendOptions(provider="sendgrid", **options)
    return send_issue(cfg, ws / SAMPLE, ws / "list.csv", chosen, sleep=sleep)


def cli_send(issue: str, *args: str) -> tuple[int, str]:
    """`newsletter send ISSUE --to list.csv ARGS` in the current folder: the exit code and
    the output with its line wrapping undone, so a message can be matched whole."""
    result = CliRunner().invoke(app, ["send", issue, "--to", "list.csv", *args])
    return result.exit_code, " ".join(result.output.split())
