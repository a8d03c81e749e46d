"""Writing files so that a crash leaves either the old file or the whole new one, and saying
so plainly when the disk is full."""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def print_json(obj, path: str | os.PathLike | None = None) -> None:
    """Print ``obj`` as JSON (indent 1) and, when ``path`` is given, write the same text there
    (the report of a ``python -m alexnet2012.bench.*`` script)."""
    text = json.dumps(obj, indent=1)
    print(text)
    if path:
        Path(path).write_text(text + "\n")


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
        with writing(path, lambda: tmp.stat().st_size if tmp.exists() else None):
            _write(path, tmp, data, before_rename)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def writing(path: str | os.PathLike, needed: Callable[[], int | None] | None = None) -> Iterator:
    """Writes to ``path`` inside: a full disk (ENOSPC anywhere in the error's chain) comes out
    as :func:`disk_full`'s :class:`DiskFullError` naming ``path`` and the free space there
    (``needed()``: the bytes wanted, asked when it happens); any other error as it was."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as e:
        if is_disk_full(e):
            raise disk_full(path, needed() if needed else None) from None
        raise


def _write(path: Path, tmp: Path, data, before_rename) -> None:
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


class DiskFullError(OSError):
    """A write failed for lack of space; the message names the path and the space needed.

    ``situation``: the message without its advice (what failed, where, the space there), for
    a caller that knows better what to do next (a run before its first checkpoint)."""

    def __init__(self, message: str, situation: str | None = None):
        super().__init__(errno.ENOSPC, message)
        self.situation = situation or message

    def __str__(self) -> str:
        return self.strerror


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` or an error in its chain is ENOSPC (torch.save wraps it in RuntimeError)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def disk_full(path: str | os.PathLike, needed: int | None = None) -> DiskFullError:
    """The error to raise when writing ``path`` ran out of space (``needed``: bytes, if known)."""
    folder = Path(path).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    want = f"about {_mib(needed)} needed, " if needed else ""
    have = f"{_mib(free)} free there" if free is not None else "free space unknown"
    situation = f"no space left on the device of {folder} writing {Path(path).name} ({want}{have})"
    return DiskFullError(
        f"{situation}; free some space or move the folder, then continue with --resume", situation
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.0f} KiB"


def stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (``| head`` read enough);
    if so, what is left for it goes nowhere, so the interpreter's last flush says nothing."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLERR)
        gone = any(ev & select.POLLERR for _, ev in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor: not a pipe
        return False
    if gone:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return gone
