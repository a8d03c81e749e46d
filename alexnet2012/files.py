"""Writing files so that a crash leaves either the old file or the whole new one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (a rename into it) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: str | os.PathLike,
    data: bytes | str | Callable,
    before_rename: Callable[[Path], None] | None = None,
) -> None:
    """Write ``data`` (bytes, text, or a function given the open binary file) to ``path``.

    The bytes go to ``<path>.tmp`` first, flushed and fsynced, then renamed onto ``path``;
    ``before_rename(tmp)`` runs just before the rename. The temporary file is removed if
    anything fails, so a crash leaves at most a stray ``.tmp`` next to the old file.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
