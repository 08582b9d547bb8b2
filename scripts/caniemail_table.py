"""Regenerate tests/data/caniemail.json from a checkout of github.com/hteumeuleu/caniemail.

    git clone https://github.com/hteumeuleu/caniemail /tmp/caniemail
    .venv/bin/python scripts/caniemail_table.py /tmp/caniemail

It keeps, for each feature tests/test_email_compat.py needs, the latest tested support
('y', 'a', 'n', 'u') in Apple Mail, Gmail, Outlook and Yahoo, and names the commit read.
To track a new feature, add `"<caniemail feature>": {}` to the table, then run this.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

TABLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "caniemail.json"
CLIENTS = {
    "apple-mail": ["macos", "ios"],
    "gmail": ["desktop-webmail", "ios", "android"],
    "outlook": ["windows", "macos", "outlook-com", "ios", "android"],
    "yahoo": ["desktop-webmail", "ios", "android"],
}


def latest(stats: str) -> dict[str, str]:
    """client.platform -> the support letter of its last listed version."""
    found: dict[str, str] = {}
    client = platform = None
    for raw in stats.splitlines():
        line = raw.strip()
        if opened := re.match(r"^([\w-]+): \{", line):
            if client is None or platform is not None:
                client, platform = opened.group(1), None
            else:
                platform = opened.group(1)
        elif (value := re.match(r'^"[^"]+"\s*:\s*"([^"]+)"', line)) and client and platform:
            found[f"{client}.{platform}"] = value.group(1).split()[0]
        elif line.startswith("}"):
            if platform is not None:
                platform = None
            else:
                client = None
    return {
        key: found[key]
        for key in (f"{c}.{p}" for c, ps in CLIENTS.items() for p in ps)
        if key in found
    }


def main() -> None:
    repo = sys.argv[1]
    commit = subprocess.check_output(["git", "-C", repo, "rev-parse", "HEAD"], text=True).strip()
    old = json.loads(TABLE.read_text("utf-8"))
    about = re.sub(r"tree/[0-9a-f]{40}", f"tree/{commit}", old["_about"])
    features = {}
    for name in old["features"]:
        text = (Path(repo) / "_features" / f"{name}.md").read_text("utf-8")
        features[name] = latest(text.split("stats:", 1)[1].split("\nnotes_by_num", 1)[0])
    rows = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in features.items()]
    body = ",\n".join(rows)
    TABLE.write_text(
        f'{{\n "_about": {json.dumps(about)},\n "features": {{\n{body}\n }}\n}}\n', "utf-8"
    )


if __name__ == "__main__":
    main()
