"""Appending articles to an issue file the editor wrote, without rewriting the rest of it.

ruamel.yaml's round trip keeps every comment, the order of keys, quoting and block
scalars; only the new articles are written out fresh, in the house indentation (keys by
2, list items by 4 with the dash at 2, as `newsletter new` writes them). The file is
checked before (it must load as an issue) and after (what we wrote must load too), and
replaced in one rename, so an editor never finds it half written.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from newsletter.content.issue import Issue, load_issue
from newsletter.errors import IssueError, Problem

#: The article `newsletter new` leaves in a fresh issue; the first added article replaces it.
PLACEHOLDER_URL = "https://example.org/TODO"


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold an editor's long line
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


class IssueFile:
    """An issue file open for adding articles; `save()` writes it back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.issue: Issue = load_issue(path)  # refuse to edit a file that is not an issue
        self._original = path.read_bytes()
        try:
            self._data: Any = _yaml().load(self._original.decode("utf-8-sig"))
        except YAMLError as exc:
            raise IssueError([Problem(str(path), None, None, f"cannot edit it: {exc}")]) from None
        self.added = 0

    def append(self, article: dict[str, Any], section: str | None = None) -> None:
        """Add `article` at the end of `articles`, or of the section titled `section`."""
        self._drop_placeholders()
        item = CommentedMap()
        for key, value in article.items():
            item[key] = CommentedMap(value) if isinstance(value, dict) else value
        self._list(section).append(item)
        self.added += 1

    def _list(self, section: str | None) -> CommentedSeq:
        data = self._data
        if section is None:
            if not isinstance(data.get("articles"), list):
                data["articles"] = CommentedSeq()
            found: CommentedSeq = data["articles"]
            return found
        if not isinstance(data.get("sections"), list):
            data["sections"] = CommentedSeq()
        for entry in data["sections"]:
            title = entry.get("title") if isinstance(entry, dict) else None
            if isinstance(title, str) and title.strip().casefold() == section.strip().casefold():
                if not isinstance(entry.get("articles"), list):
                    entry["articles"] = CommentedSeq()
                articles: CommentedSeq = entry["articles"]
                return articles
        new = CommentedMap(title=section.strip(), articles=CommentedSeq())
        data["sections"].append(new)
        made: CommentedSeq = new["articles"]
        return made

    def _drop_placeholders(self) -> None:
        """The skeleton's TODO article goes once a real one arrives."""
        lists = [self._data.get("articles")]
        lists += [
            s.get("articles") for s in self._data.get("sections") or [] if isinstance(s, dict)
        ]
        for items in lists:
            if isinstance(items, list):
                for i in reversed(range(len(items))):
                    if isinstance(items[i], dict) and items[i].get("url") == PLACEHOLDER_URL:
                        del items[i]

    def save(self) -> None:
        """Write the file back in one rename; if the result is no valid issue, keep the old one."""
        out = io.StringIO()
        _yaml().dump(self._data, out)
        # beside the file (one file system, so the rename is atomic), under the same name,
        # since the name may carry the issue's date
        folder = Path(tempfile.mkdtemp(prefix=".adding-", dir=self.path.parent))
        tmp = folder / self.path.name
        try:
            tmp.write_text(out.getvalue(), encoding="utf-8")
            self.issue = load_issue(tmp)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
            folder.rmdir()
