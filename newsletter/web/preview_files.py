"""What an editor looks at before anything is sent: the rendered files in build/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from newsletter.config import Config
from newsletter.content.issue import Issue, load_issue
from newsletter.content.render import Rendered, render_issue
from newsletter.delivery.message import MessageBuilder, headers_for, sample_recipient
from newsletter.delivery.output import write_atomic


@dataclass(frozen=True)
class RenderOutput:
    issue: Issue
    rendered: Rendered
    html: Path
    text: Path
    eml: Path

    @property
    def warnings(self) -> list[str]:
        return self.rendered.warnings


def render_files(
    issue_path: Path, config: Config, out: Path, templates: Path | None = None
) -> RenderOutput:
    """Write `<stem>.html`, `<stem>.txt` and `<stem>.eml` for a sample reader into `out`."""
    issue = load_issue(issue_path)
    rendered = render_issue(issue, config, templates)
    reader = sample_recipient(config)
    html, text = rendered.personalise(reader.fields)
    eml = MessageBuilder(rendered, headers_for(config)).build(reader)
    stem = issue_path.stem
    return RenderOutput(
        issue,
        rendered,
        write_atomic(out / f"{stem}.html", html),
        write_atomic(out / f"{stem}.txt", text),
        write_atomic(out / f"{stem}.eml", eml),
    )
