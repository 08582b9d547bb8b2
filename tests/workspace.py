"""A fresh workspace in a tmp dir: the repository's config, sample issue and example list."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = "issues/2025-08-01-north-korea.yaml"


def make_workspace(root: Path, *, config: str | None = None) -> Path:
    """Copy what a user has after cloning, so tests never write into the repository."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "issues").mkdir(exist_ok=True)
    shutil.copy(REPO / SAMPLE, root / SAMPLE)
    if (REPO / "subscribers.example.csv").exists():
        shutil.copy(REPO / "subscribers.example.csv", root / "subscribers.example.csv")
    (root / "newsletter.yaml").write_text(
        config if config is not None else (REPO / "newsletter.yaml").read_text(), encoding="utf-8"
    )
    return root


def write_issue(root: Path, name: str, text: str) -> Path:
    path = root / "issues" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL_ISSUE = """\
title: Weekly notes
date: 2025-08-08
subject: Weekly notes for the eighth
preheader: Three things worth reading this week.
articles:
  - headline: First story
    summary: Something **important** happened, says [the source](https://news.example.net/a).
    url: https://news.example.net/first
"""
