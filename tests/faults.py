"""Fault injection for the reliability tests (``tests/training/test_faults.py``), tests only.

Nothing happens unless the environment variable ``ALEXNET2012_FAULT`` is set. It holds one or
more faults separated by ``;``, each ``kind@key=value,key=value``::

    ALEXNET2012_FAULT=kill@step=7,rank=1     # SIGKILL rank 1 right after step 7
    ALEXNET2012_FAULT=kill@after_s=2.5       # SIGKILL 2.5 s into training, wherever it is then
    ALEXNET2012_FAULT=kill@step=9,after_s=0.1   # SIGKILL 0.1 s after step 9: mid-step or mid-save
    ALEXNET2012_FAULT=hang@step=5,rank=1     # rank 1 stops responding after step 5
    ALEXNET2012_FAULT=nan@step=4             # the loss of step 4 becomes NaN
    ALEXNET2012_FAULT=signal@step=5          # SIGTERM after step 5 (as Ctrl-C or preemption)
    ALEXNET2012_FAULT=kill_in_save@step=6,at=sidecar   # SIGKILL while writing checkpoint 6

``rank``: the (global) rank it fires on; default every rank (``kill_in_save`` fires on the rank
that writes checkpoints, rank 0). ``attempt``: the torchrun restart
(``TORCHELASTIC_RESTART_COUNT``) it fires on; default 0, so a job restarted by
``torchrun --max-restarts`` runs clean. ``at`` (kill_in_save): ``payload`` (the ``.tmp`` file
half written), ``sidecar`` (payload and checksum written, not yet renamed into place) or
``rename`` (renamed, old checkpoints not yet removed).

:class:`FaultHooks` acts on them at the trainer's hook points (:mod:`alexnet2012.control.hooks`):
``install()`` puts it in place in this process, and ``python tests/faultrun.py train ...`` (also
as torchrun's script) runs the CLI with it installed. The variable is parsed once per distinct
value (a malformed value is a ValueError, so the CLI exits with status 2); when it is unset each
hook costs one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

from alexnet2012.control import hooks
from alexnet2012.control.torchrun import restart_count

log = logging.getLogger(__name__)

ENV = "ALEXNET2012_FAULT"
KINDS = ("kill", "hang", "nan", "signal", "kill_in_save")
SAVE_STAGES = ("payload", "sidecar", "rename")


@dataclass(frozen=True)
class Fault:
    """One planned fault: what, when (a step, or seconds after :func:`start`) and where."""

    kind: str
    step: int | None = None
    after_s: float | None = None
    rank: int | None = None
    attempt: int = 0
    at: str = "payload"

    def here(self, rank: int | None) -> bool:
        """Whether this fault applies to ``rank`` in this torchrun attempt."""
        mine = self.rank is None or rank is None or rank == self.rank
        return mine and restart_count() == self.attempt


def parse(text: str) -> tuple[Fault, ...]:
    """``"kill@step=7,rank=1;nan@step=3"`` -> the faults; ValueError naming a bad part."""
    faults = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        kind, _, args = part.partition("@")
        if kind not in KINDS:
            raise ValueError(f"{ENV}: unknown fault {kind!r} in {part!r}; one of {KINDS}")
        fields = {}
        for item in filter(None, args.split(",")):
            key, _, value = item.partition("=")
            if key in ("step", "rank", "attempt"):
                fields[key] = int(value)
            elif key == "after_s":
                fields[key] = float(value)
            elif key == "at" and value in SAVE_STAGES:
                fields[key] = value
            else:
                raise ValueError(f"{ENV}: bad setting {item!r} in {part!r}")
        if fields.get("step") is None and fields.get("after_s") is None:
            raise ValueError(f"{ENV}: {part!r} needs step=N (or after_s=S for kill)")
        faults.append(Fault(kind, **fields))
    return tuple(faults)


_CACHE: list = ["", ()]  # [raw value, parsed faults]
_DONE = [0]  # the last training step this process finished (for the kill message)


def active() -> tuple[Fault, ...]:
    """The faults the environment asks for (parsed once per distinct value); () when unset."""
    raw = os.environ.get(ENV, "")
    if raw != _CACHE[0]:
        _CACHE[:] = [raw, parse(raw)]
    return _CACHE[1]


def _kill(why: str) -> None:
    log.warning("fault injection: SIGKILL %s (pid %d, step %d done)", why, os.getpid(), _DONE[0])
    for h in logging.getLogger().handlers:
        h.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_later(seconds: float, why: str) -> None:
    timer = threading.Timer(seconds, _kill, args=(why,))
    timer.daemon = True  # fires wherever the main thread is: a step, an exchange, a save
    timer.start()


def _start(rank: int) -> None:
    """Arm the faults timed from the start of training (``kill@after_s=S``)."""
    for f in active():
        if f.kind == "kill" and f.step is None and f.after_s is not None and f.here(rank):
            _kill_later(f.after_s, f"{f.after_s} s into training")


def _loss(value, step: int, rank: int):
    """``value`` times NaN when a ``nan`` fault names ``step`` (the step being computed)."""
    for f in active():
        if f.kind == "nan" and f.step == step and f.here(rank):
            log.warning("fault injection: NaN loss at step %d", step)
            return value * float("nan")
    return value


def _after_step(step: int, rank: int) -> None:
    """Kill, hang or signal this process once training step ``step`` is done."""
    _DONE[0] = step
    for f in active():
        if f.step != step or not f.here(rank):
            continue
        if f.kind == "kill" and f.after_s is not None:
            _kill_later(f.after_s, f"{f.after_s} s after step {step}")
        elif f.kind == "kill":
            _kill(f"after step {step}")
        elif f.kind == "signal":
            log.warning("fault injection: SIGTERM after step %d", step)
            os.kill(os.getpid(), signal.SIGTERM)
        elif f.kind == "hang":
            log.warning("fault injection: rank %d hangs after step %d", rank, step)
            while True:  # no progress, no exit: only a kill ends it
                time.sleep(1)


def _in_save(step: int, stage: str) -> None:
    """Kill this process at ``stage`` of writing checkpoint ``step`` (see the module docs)."""
    for f in active():
        if f.kind == "kill_in_save" and f.step == step and f.at == stage and f.here(None):
            _kill(f"while saving checkpoint {step} ({stage})")


class FaultHooks(hooks.Hooks):
    """The trainer's hook points, acting on the faults ``ALEXNET2012_FAULT`` asks for."""

    def start(self, rank):
        _start(rank)

    def loss(self, value, step, rank):
        return _loss(value, step, rank)

    def after_step(self, step, rank):
        _after_step(step, rank)

    def in_save(self, step, stage):
        _in_save(step, stage)


def install() -> hooks.Hooks:
    """Put :class:`FaultHooks` in place in this process; the hooks they replace."""
    return hooks.install(FaultHooks())
