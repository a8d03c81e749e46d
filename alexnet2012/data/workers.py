"""The decoding processes of ``prepare`` and the image slots they share with the parent.

Decoded images never travel through pickles: before the pool forks, the parent maps an
anonymous shared buffer of ``slots`` images; a worker decodes an image straight into the slot
the parent named and returns only ``(ok, tags, moments, *extra)``: whether the file was good,
its oddity tags (or why it is bad), its exact RGB second moments (the parent's share of the PCA
is then a sum of 3x3 matrices) and, for a JPEG store, its bytes and pixel error. With
``workers`` <= 1 the same code runs in this process.
"""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing
import os
import signal

import numpy as np
import torch

from alexnet2012.data.writer import second_moments

_slots: np.ndarray | None = None  # (slots, size, size, 3) uint8, shared with the forked pool
_parent = 0  # the process that forked the pool


def _decode(task) -> tuple:
    load, loc, slot = task
    image, note, *extra = load(loc)  # extra: what a JPEG store keeps (:mod:`.jpegstore`)
    if image is None:
        return False, note, None
    _slots[slot] = image
    return True, note, second_moments(image), *extra


def _init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the pool
    # a parent killed mid-run: a worker's result meets a closed pipe; it ends there, quietly,
    # not with a BrokenPipeError traceback per worker
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    _end_with_parent()
    torch.set_num_threads(1)  # one image per process; the pool is the parallelism


def _end_with_parent() -> None:
    """On Linux, have the kernel end this worker (SIGTERM, no traceback) when the parent dies,
    so no orphan decodes on; elsewhere the closed pipe ends it at its next result."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != _parent:  # the parent died before the call: end now
        os._exit(0)


class Decoders:
    """``workers`` forked processes (or this one) decoding into ``slots`` shared images."""

    def __init__(self, workers: int, slots: int, size: int):
        global _slots, _parent
        _parent = os.getpid()
        shared = mmap.mmap(-1, slots * size * size * 3)  # MAP_SHARED: seen by forked children
        _slots = np.frombuffer(shared, np.uint8).reshape(slots, size, size, 3)
        self.slots = _slots
        self.pool = None
        self.threads = torch.get_num_threads()
        if workers > 1:
            self.pool = multiprocessing.get_context("fork").Pool(workers, initializer=_init)
        else:
            torch.set_num_threads(1)  # decoding here, one image at a time

    def map(self, load, locs: list, first_slot: int):
        """Decode ``locs`` into slots ``first_slot``...; an iterator of ``(ok, note, moments)``
        in order (lazy without a pool, so nothing runs before it is asked for)."""
        tasks = [(load, loc, first_slot + j) for j, loc in enumerate(locs)]
        return self.pool.imap(_decode, tasks, chunksize=4) if self.pool else map(_decode, tasks)

    def close(self) -> None:
        global _slots
        torch.set_num_threads(self.threads)
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
        _slots = self.slots = None  # unmapped once the last view is gone
