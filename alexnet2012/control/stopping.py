"""Stopping on a signal: SIGINT/SIGTERM ask the run to checkpoint and stop, on every rank at once.

A signal reaches one process (Ctrl-C in a terminal reaches all; a scheduler may signal one), so
the ranks vote every ``every`` steps with a one-number all-reduce and stop at the same step. On
CUDA the vote is read ``every`` steps after it was cast, from a pinned host copy that finished
long ago, so the training step never waits for the GPU (no host synchronisation inside the
step); on the CPU it is read at once.

A signal often arrives more than once: Slurm signals every process of a job step (``scancel -s
TERM``, ``--signal=TERM@120``, a preemption or time limit), so a worker under torchrun gets
Slurm's SIGTERM and then the one torchrun passes on. A repeated SIGTERM is the same request and
never cuts the save short; only a second SIGINT (Ctrl-C pressed again) stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading

import torch

from alexnet2012.parallel import comm

_STOP = {"signal": 0}


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; a checkpoint was written and ``--resume`` continues the run."""


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGINT and SIGTERM set the stop flag; SIGINT after that stops at once
    (KeyboardInterrupt), a repeated SIGTERM changes nothing. After a stop was asked for, SIGTERM
    stays ignored when the block ends: the process is on its way out with its status, and a late
    copy of the signal must not kill it first."""

    def handler(signum, frame):
        if not _STOP["signal"]:
            _STOP["signal"] = signum
        elif signum == signal.SIGINT:  # Ctrl-C again: stop now, without saving
            raise KeyboardInterrupt
        # else SIGTERM again (Slurm and torchrun each send one): the same request

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _STOP["signal"] = 0
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if _STOP["signal"] and old[signal.SIGTERM] is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


def signalled() -> bool:
    """Whether this process received SIGINT or SIGTERM inside :func:`stop_on_signals`."""
    return bool(_STOP["signal"])


class StopVote:
    """The ranks' agreement to stop, taken every ``every`` steps.

    ``deferred`` (default: on CUDA) reads the vote cast one period earlier, so a signal stops the
    run within ``2 * every`` steps instead of ``every``, and no step waits for the device.
    """

    def __init__(self, env, every: int = 10, deferred: bool | None = None):
        self.env, self.every = env, every
        self.deferred = env.device.type == "cuda" if deferred is None else deferred
        self._host: torch.Tensor | None = None  # the last vote cast, on the host (pinned: CUDA)
        self._done: torch.cuda.Event | None = None  # when its copy to the host is complete

    def poll(self, step: int) -> bool:
        """Whether all ranks stop after ``step``; the same answer on every rank."""
        if self.env.world_size == 1:
            return signalled()
        if step % self.every:
            return False
        if not self.deferred:
            return self.now()
        stop = self._read()  # the vote cast ``every`` steps ago, read before the next reuses it
        self._cast()
        return stop

    def now(self) -> bool:
        """Vote and read at once (outside the step: after validation and a save)."""
        if self.env.world_size == 1:
            return signalled()
        return self._reduce().item() > 0

    def _reduce(self) -> torch.Tensor:
        flag = torch.full((1,), float(signalled()), device=self.env.device)  # a fill, no copy
        return comm.all_reduce_sum(flag, self.env.world)

    def _read(self) -> bool:
        if self._host is None:  # the first vote of this process: nothing to read yet
            return False
        if self._done is not None:
            self._done.synchronize()  # recorded ``every`` steps ago: already passed
        return self._host.item() > 0

    def _cast(self) -> None:
        flag = self._reduce()
        if flag.device.type != "cuda":
            self._host = flag
            return
        if self._done is None:
            self._host, self._done = torch.empty(1, pin_memory=True), torch.cuda.Event()
        self._host.copy_(flag, non_blocking=True)
        self._done.record()
