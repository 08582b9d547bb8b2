"""Words for counts, shared by the library's messages and the CLI's output.

Here rather than in `console.py` so that library code (a refusal that says how many
recipients were mailed) never imports the module that prints.
"""

from __future__ import annotations


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 recipient`, `2 recipients`: a count with its noun, never "1 warnings"."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"
