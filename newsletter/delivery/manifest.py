"""Content hashes for a send's manifest: which issue file, templates and list went out.

They describe what was sent, not how it is stored, so they live with the send rather than
in the ledger: any storage backend records the same hex strings.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from newsletter.errors import LedgerError


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so a large list costs no memory."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_tree(path: Path) -> str:
    """Hex SHA-256 of every file under a directory, so any template change shows in the manifest.

    Each file contributes its relative POSIX name and the hash of its contents, in sorted
    order: the result does not depend on the filesystem's listing order, and a rename counts.
    Empty directories do not count.
    """
    if not path.is_dir():
        raise LedgerError(f"{path}: not a directory, cannot hash the templates in it")
    names: list[str] = []
    for dirpath, _dirnames, filenames in os.walk(path):
        for filename in filenames:
            full = Path(dirpath, filename)
            if full.is_file():
                names.append(full.relative_to(path).as_posix())
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(f"{name}\0{sha256_file(path / name)}\n".encode())
    return digest.hexdigest()
