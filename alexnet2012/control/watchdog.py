"""Waits that are slow by nature, and stalls that are failures: the run's timeouts.

``parallel.timeout_s`` is how long a rank may wait for a peer before the run stops. Some waits
are longer by nature: rank 0 writing a checkpoint while the other ranks wait for it (about
0.5 GB at full size, perhaps on network storage), a resume reading one, and the first compiled
step and evaluation, where each rank compiles its graphs. :func:`patient` gives every process
group of the run a longer timeout (``parallel.slow_timeout_s``) for such a section and the short
one back after it, so a slow filesystem or compiler does not read as a dead peer.

Under NCCL a collective that waits for a dead or stopped peer raises nothing: the host runs on
until it next waits for the GPU, and NCCL's own watchdog ends the process with its text after
the group's timeout. :class:`Watchdog` watches the training loop instead: when no training step
or evaluation batch completes (:func:`beat`) for ``parallel.timeout_s`` outside a patient
section, it logs the project's one-line message and ends the process with status 1. NCCL's
groups get twice ``parallel.timeout_s`` (:func:`group_timeout`), so that message comes first and
NCCL's watchdog stays the backstop (docs/failures.md).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from alexnet2012.parallel import comm

log = logging.getLogger(__name__)

NCCL_BACKSTOP = 2  # NCCL's groups time out at this many times parallel.timeout_s


def group_timeout(seconds: float, backend: str) -> float:
    """The timeout a process group gets for a wait of ``seconds``: NCCL's watchdog kills the
    process when it acts, so it acts only after :class:`Watchdog` has said what happened."""
    return seconds * NCCL_BACKSTOP if backend == "nccl" else seconds


def slow_timeout_s(cfg) -> float:
    """The patient sections' timeout: ``parallel.slow_timeout_s`` (config/schema.py's default,
    checked positive), never below ``parallel.timeout_s``."""
    return max(cfg.parallel.slow_timeout_s, cfg.parallel.timeout_s)


class Watchdog:
    """Ends this process with ``message(idle_seconds)`` when :meth:`beat` has not been called
    for ``timeout_s`` (``limit`` inside a patient section). Armed by the first beat."""

    def __init__(self, timeout_s: float, message: Callable[[float], str]):
        self.timeout_s = self.limit = timeout_s
        self.message = message
        self.last: float | None = None  # time of the last beat; None: not armed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alexnet2012-watchdog", daemon=True)

    def beat(self) -> None:
        self.last = time.monotonic()

    def disarm(self) -> None:
        self.last = None

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout_s / 10)):
            last = self.last
            if last is not None and time.monotonic() - last > self.limit:
                self._fire(time.monotonic() - last)

    def _fire(self, idle: float) -> None:
        log.error("%s", self.message(idle))
        for h in logging.getLogger().handlers:
            h.flush()
        sys.stderr.flush()
        os._exit(1)  # the main thread is blocked in the GPU or an exchange: nothing else ends it


_ACTIVE: list[Watchdog | None] = [None]
_PATIENT = [0]  # depth of nested patient sections


@contextmanager
def watching(timeout_s: float, message: Callable[[float], str], on: bool) -> Iterator[None]:
    """Run the body under a :class:`Watchdog` (when ``on``); :func:`beat` feeds it."""
    if not on:
        yield
        return
    dog = Watchdog(timeout_s, message)
    dog._thread.start()
    _ACTIVE[0] = dog
    try:
        yield
    finally:
        _ACTIVE[0] = None
        dog._stop.set()


def beat() -> None:
    """A training step or an evaluation batch is done: progress (nothing without a watchdog)."""
    if (dog := _ACTIVE[0]) is not None:
        dog.beat()


def disarm() -> None:
    """Training is over on this rank (what follows may take long: uploads, closing files)."""
    if (dog := _ACTIVE[0]) is not None:
        dog.disarm()


def groups_of(run) -> list:
    """The process groups a patient section lengthens: every group of an Env or Execution."""
    return [comm.world(), run.group, run.data]


@contextmanager
def patient(cfg, groups: list) -> Iterator[None]:
    """Inside the body every process group among ``groups`` (and the watchdog) waits up to
    :func:`slow_timeout_s`; after it, ``parallel.timeout_s`` again."""
    timeout_s, slow = cfg.parallel.timeout_s, slow_timeout_s(cfg)
    backend = _backend()
    _PATIENT[0] += 1
    if _PATIENT[0] == 1:
        comm.set_timeout(groups, group_timeout(slow, backend))
        if (dog := _ACTIVE[0]) is not None:
            dog.limit = slow
    try:
        yield
    finally:
        _PATIENT[0] -= 1
        if _PATIENT[0] == 0:
            comm.set_timeout(groups, group_timeout(timeout_s, backend))
            if (dog := _ACTIVE[0]) is not None:
                dog.limit = dog.timeout_s
                if dog.last is not None:
                    dog.beat()  # the section's own time is not a stall


def _backend() -> str:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return str(dist.get_backend())
    return "none"
