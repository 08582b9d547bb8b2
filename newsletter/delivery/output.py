"""Writing results so that nobody ever finds half a file where a whole one should be."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from newsletter.errors import UsageError


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write to a temporary file beside `path`, then rename it into place."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UsageError(
            f"{path.parent}: cannot write here ({exc.strerror}); choose another --out"
        ) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk, a folder where the file should go, ...
            raise UsageError(
                f"{path}: cannot write it ({exc.strerror or exc}); nothing was written there"
            ) from None
        raise
    return path
