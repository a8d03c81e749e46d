"""A run and how it starts: its folder, and whether it continues an earlier attempt.

:class:`Run` carries what the trainer and its checkpoints share: the run folder, config,
process environment, execution, optimiser, schedule and run state. :func:`start_policy` decides
the folder and whether to resume: ``--resume``, or a torchrun restart of the job that started
the folder (never a folder an earlier job left there).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from alexnet2012.config import Config, ConfigError
from alexnet2012.parallel import comm, torchrun
from alexnet2012.training.checkpoint import checkpoints, resumable_by
from alexnet2012.training.state import RunState


@dataclass
class Run:
    """One training run in this process."""

    dir: Path
    cfg: Config
    env: torchrun.Env
    ex: object  # parallel.execution.Execution
    opt: object  # torch.optim.Optimizer
    sched: object  # training.schedule schedule
    state: RunState | None = None


def start_policy(cfg: Config, resume: bool) -> bool:
    """Set ``run.dir``'s default and say whether the run resumes (``resume``: ``--resume``).

    The launch scripts give their default folder through ``ALEXNET2012_RUN_DIR``
    (runs/$RDZV_ID, runs/slurm-$SLURM_JOB_ID). Under ``torchrun --max-restarts`` a folder is
    required, and a restarted job continues from its last checkpoint there.
    """
    if not cfg.run.dir:
        cfg.run.dir = os.environ.get("ALEXNET2012_RUN_DIR", "")
    if not cfg.run.dir and torchrun.max_restarts() > 0:
        raise ConfigError(
            "torchrun --max-restarts needs run.dir=DIR: a restarted job continues from the "
            "checkpoints there (a time-stamped folder would differ in every attempt)"
        )
    return resume or _restarted(cfg)


def _restarted(cfg: Config) -> bool:
    """Whether this is a torchrun restart of the job that started ``run.dir``."""
    job, run_dir = torchrun.restartable_job(), cfg.run.dir
    if torchrun.restart_count() == 0 or not job or not run_dir or not checkpoints(run_dir):
        return False
    return resumable_by(run_dir, job)


def resolve_run_dir(cfg: Config, env) -> Path:
    """``run.dir``, or ``runs/<model>-<time>`` chosen on the main rank and shared."""
    name = cfg.run.dir
    if not name:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = comm.broadcast_object(f"runs/{cfg.model.name}-{stamp}", env.world, src=0)
    path = Path(name)
    if env.is_main:
        path.mkdir(parents=True, exist_ok=True)
    return path
