"""The run-control object: everything a training run needs around the recipe itself.

``with RunControl.start(cfg) as ctl:`` holds, for one run, the signal handlers and the ranks'
stop vote (:mod:`.stopping`), the process group and the translation of a dead or silent peer
into one message (:mod:`.torchrun`, :mod:`.watchdog`), the run folder's lock (:mod:`.runlock`),
the job's restarts (:mod:`.jobs`), the hooks (:mod:`.hooks`), and the broadcast that turns one
rank's failed write into every rank's error. The training loop (training/loop.py) calls it at
a few points (:meth:`claim`, :meth:`begin`, :meth:`stepped`, :meth:`stop_asked`,
:meth:`save`, :meth:`finish`) and otherwise reads as the recipe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from alexnet2012.control import hooks, jobs, torchrun, watchdog
from alexnet2012.control.runlock import RunFolderError, RunLock
from alexnet2012.control.stopping import Interrupted, StopVote, stop_on_signals
from alexnet2012.files import DiskFullError
from alexnet2012.parallel import comm


class RunControl:
    """One run's control: its environment ``env``, lock, stop vote and patient sections."""

    def __init__(self, cfg, env: torchrun.Env):
        self.cfg, self.env = cfg, env
        self.lock: RunLock | None = None  # the main rank's, from claim() to the run's end
        self.began = False  # the run has its state: a refusal before it restores the lock file
        self.vote: StopVote | None = None

    @classmethod
    @contextlib.contextmanager
    def start(cls, cfg, env: torchrun.Env | None = None) -> Iterator[RunControl]:
        """Signals caught, the process group up (torchrun's, or one process; ``env``: one
        already started, in tests), a lost peer reported as :class:`~.torchrun.PeerError`, and
        the lock released at the end whatever happens."""
        timeout_s = cfg.parallel.timeout_s
        with contextlib.ExitStack() as stack:
            stack.enter_context(stop_on_signals())
            if env is None:
                env = stack.enter_context(torchrun.session(timeout_s, cfg.train.device))
            stack.enter_context(torchrun.peer_failures(env, timeout_s, cfg.run.dir))
            ctl = cls(cfg, env)
            try:
                yield ctl
            finally:
                ctl.release()

    # ----- the run folder ------------------------------------------------------------------
    def claim(self, run_dir: Path, check: Callable[[], None]) -> None:
        """Make ``run_dir`` this job's: the main rank takes its lock and runs ``check`` (the
        folder's state; raises RunFolderError or DiskFullError). Every rank raises the same
        error when either fails."""

        def take() -> None:
            try:
                self.lock = RunLock(run_dir).acquire()
                check()
            except (RunFolderError, DiskFullError):
                self.release()
                raise

        on_main(self.env, take, RunFolderError, DiskFullError)

    def has_state(self) -> None:
        """The run has its state (fresh or restored): from here a failure leaves the lock file
        to say the folder is this job's; before it, a refused run restores the file."""
        self.began = True

    def release(self) -> None:
        """Free the run folder for other jobs (the process's end does it too). A run refused
        before it began leaves the lock file as it found it."""
        if self.lock is not None:
            self.lock.release(restore=not self.began)
            self.lock = None

    def restarted(self) -> bool:
        """Whether this is a later attempt of the job (a torchrun restart, a Slurm requeue)."""
        return jobs.restarted()

    # ----- waiting --------------------------------------------------------------------------
    def patient(self):
        """A section that may take long on one rank (reading a checkpoint, W&B's start, a save):
        the others wait for it under the slow timeout, not ``parallel.timeout_s``."""
        return watchdog.patient(self.cfg, watchdog.groups_of(self.env))

    def together(self, write: Callable[[], object]):
        """``write()`` on every rank (only the main rank writes files), then its outcome on all:
        a write that failed there (a full disk) stops every rank with its words."""
        failed = out = None
        try:
            out = write()
        except OSError as e:  # only the main rank writes
            failed = e
        code = 0 if failed is None else 1 + isinstance(failed, DiskFullError)
        flag = comm.broadcast(torch.tensor([code], device=self.env.device), self.env.world)
        if int(flag.item()):  # rank 0 could not write: every rank stops with its words
            why = getattr(failed, "situation", str(failed))
            text = comm.broadcast_object(why, self.env.world, src=0)
            raise (DiskFullError if int(flag.item()) == 2 else OSError)(text)
        return out

    def save(self, write: Callable[[], object]) -> None:
        """A checkpoint (rank 0 writes); the other ranks wait for the outcome under the patient
        timeout, not in the next exchange, and a failed write stops every rank with rank 0's
        message, not "died"."""
        with self.patient():
            self.together(write)

    # ----- steps and stopping ---------------------------------------------------------------
    def begin(self) -> None:
        """The first step is next: the hooks are told, the stop vote starts."""
        self.vote = StopVote(self.env)  # ranks agree every 10 steps: all stop at the same step
        hooks.current().start(self.env.rank)

    def stepped(self, step: int) -> None:
        """Training step ``step`` (1-based) is done on this rank."""
        hooks.current().after_step(step, self.env.rank)

    def stop_asked(self, step: int, at_once: bool = False) -> bool:
        """Whether every rank stops after ``step`` (a signal reached one of them); the same
        answer on all. ``at_once``: vote now (outside a step), not at the vote's period."""
        return self.vote.now() if at_once else self.vote.poll(step)

    def stop(self, step: int, run_dir, close: Callable[[], None]) -> Interrupted:
        """After the stop's checkpoint: the ranks leave together (under torchrun an early exit
        makes the agent signal the others, and a second signal would cut rank 0's save short);
        the error to raise."""
        comm.barrier(self.env.world)
        watchdog.disarm()
        close()
        return Interrupted(
            f"stopped by a signal at step {step}; checkpoint saved in {run_dir}. "
            f"Continue with: alexnet2012 train --resume {run_dir}"
        )

    def finish(self) -> None:
        """Training is over: no rank closes its connections while another still uses them, and
        what follows (closing the logger, uploads) may take long."""
        comm.barrier(self.env.world)
        watchdog.disarm()


def on_main(env: torchrun.Env, fn: Callable[[], object], *errors: type[Exception]):
    """``fn()`` on the main rank, its result on every rank; an error of one of ``errors`` raised
    there is raised on every rank, of the same type and with its words (a full disk's without
    its advice: the caller knows what to do next)."""
    out = problem = None
    if env.is_main:
        try:
            out = fn()
        except errors as e:
            kind = next(i for i, t in enumerate(errors) if isinstance(e, t))
            problem = (kind, getattr(e, "situation", str(e)))
    out, problem = comm.broadcast_object((out, problem), env.world, src=0)
    if problem:
        raise errors[problem[0]](problem[1])
    return out
