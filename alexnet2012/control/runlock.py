"""One job per run folder: an OS lock held for the job's life, and no silent take-over.

The main rank of a job holds an exclusive ``flock`` on ``run_dir/job.lock`` from the start of
the run to the end of the process; the operating system releases it when the process dies, so a
crashed job never leaves a stale lock, and a torchrun restart of the same job takes it again.
The file says who holds it (host and pid), for the message a second job gets. ``flock`` is
reliable on local disks and on NFS v4; on filesystems without working locks it refuses nothing.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from alexnet2012.files import writing

LOCK_FILE = "job.lock"
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json")  # what a started run has written


class RunFolderError(ValueError):
    """The run folder is taken or holds another run; the message says what to do."""


class RunLock:
    """The held lock of one run folder; :meth:`release` (or the process's end) frees it."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None
        self._previous: bytes | None = None  # the file as it was, for a job that never started

    def acquire(self) -> RunLock:
        """Take the lock, or :class:`RunFolderError` naming the live job that holds it."""
        existed = self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderError(
                f"{self.path.parent} is in use by a live job ({holder}); wait for it to end, "
                "stop it, or choose another run.dir"
            ) from None
        self._previous = os.pread(fd, 4096, 0) if existed else None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        holder = f"host {socket.gethostname()}, pid {os.getpid()}, since {stamp}\n".encode()
        with writing(self.path):  # a full disk: named, after the folder is left as it was
            try:
                os.pwrite(fd, holder.ljust(len(self._previous or b"")), 0)  # no space freed first
                os.ftruncate(fd, len(holder))
            except OSError:
                self._fd = fd
                try:
                    self.release(restore=True)
                except OSError:  # the old holder's line could not be put back: only a note lost
                    os.close(fd)
                    self._fd = None
                raise
        self._fd = fd
        return self

    def release(self, restore: bool = False) -> None:
        """Drop the lock; ``restore``: a job that never started leaves the file as it found it."""
        if self._fd is None:
            return
        if restore:
            if self._previous is None:
                self.path.unlink(missing_ok=True)
            else:
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, self._previous, 0)
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None


def earlier_run(run_dir: str | os.PathLike) -> list[str]:
    """The files of an earlier run in ``run_dir`` (a run that wrote them but no checkpoint)."""
    return [name for name in RUN_FILES if (Path(run_dir) / name).exists()]


def set_aside(run_dir: str | os.PathLike, names: list[str]) -> Path:
    """Move an earlier run's files into ``run_dir/replaced-<time>/`` (nothing is deleted)."""
    dest = Path(run_dir) / time.strftime("replaced-%Y%m%d-%H%M%S")
    dest.mkdir()
    for name in names:
        os.replace(Path(run_dir) / name, dest / name)
    return dest
