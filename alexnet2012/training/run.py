"""A run and how it starts: its folder, and whether it continues an earlier attempt.

:class:`Run` carries what the trainer and its checkpoints share: the run folder, config,
process environment, execution, optimiser, schedule and run state. :func:`start_policy` decides
the folder and whether to resume: ``--resume``, or a later attempt (a torchrun restart, a Slurm
requeue) of the job that started the folder (never a folder an earlier job left there).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from alexnet2012.config import Config, ConfigError
from alexnet2012.control import jobs, torchrun
from alexnet2012.control.runcontrol import on_main
from alexnet2012.control.runlock import RunFolderError, earlier_run, set_aside
from alexnet2012.files import DiskFullError, writing
from alexnet2012.training.checkpoint import (
    check_space,
    checkpoints,
    remove_strays,
    resumable_by,
    step_of,
)
from alexnet2012.training.state import RunState

log = logging.getLogger(__name__)


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

    @property
    def images_per_step(self) -> int:
        """The images one step trains on, over all data-parallel replicas."""
        return self.cfg.train.batch_size * self.env.data.size


def start_policy(cfg: Config, resume: bool) -> bool:
    """Set ``run.dir``'s default and say whether the run resumes (``resume``: ``--resume``).

    The launch scripts give their default folder through ``ALEXNET2012_RUN_DIR``
    (runs/$RDZV_ID, runs/slurm-$SLURM_JOB_ID). Under ``torchrun --max-restarts`` a folder is
    required, and a restarted or requeued job continues from its last checkpoint there.
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
    """Whether this is a later attempt (torchrun restart, Slurm requeue) of the job that started
    ``run.dir``."""
    job, run_dir = jobs.job(), cfg.run.dir
    if not jobs.restarted() or not job or not run_dir or not checkpoints(run_dir):
        return False
    return resumable_by(run_dir, job)


def folder_check(run_dir: Path, resume: bool, replace: bool = False):
    """What the main rank checks in ``run_dir`` once it holds the lock
    (:meth:`RunControl.claim <alexnet2012.control.runcontrol.RunControl.claim>`): it clears what
    an interrupted save left, then a fresh run needs a folder with no earlier run in it (or
    ``replace``), a resumed one room for a checkpoint."""

    def check() -> None:
        remove_strays(run_dir)
        if resume:
            check_space(run_dir)
        else:
            _check_fresh(run_dir, replace)

    return check


def _check_fresh(run_dir: Path, replace: bool) -> None:
    names = earlier_run(run_dir)
    if not names or checkpoints(run_dir):  # a folder with checkpoints: snapshot.begin refuses
        return
    job = jobs.job()
    if job and jobs.restarted() and resumable_by(run_dir, job):
        return  # a later attempt of the job that started it, before its first checkpoint
    if replace:
        dest = set_aside(run_dir, names)
        log.info("run.dir %s: the earlier run's %s moved to %s", run_dir, ", ".join(names), dest)
        return
    raise RunFolderError(
        f"{run_dir} holds an earlier run's {', '.join(names)} but no checkpoint (a run stopped "
        "in its first epoch?); start over there with --replace (its files are moved into a "
        "replaced-<time> folder), or choose another run.dir"
    )


def resolve_run_dir(cfg: Config, env: torchrun.Env) -> Path:
    """``run.dir``, or ``runs/<model>-<time>``, created by the main rank; every rank gets the
    same folder, or the same :class:`RunFolderError` (:class:`DiskFullError`) when it cannot be
    created."""

    def create() -> str:
        name = cfg.run.dir or f"runs/{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            with writing(name):  # a full disk: DiskFullError naming the folder
                Path(name).mkdir(parents=True, exist_ok=True)
        except DiskFullError:
            raise
        except OSError as e:
            why = f"cannot create the folder ({e.strerror or e}); choose another"
            raise RunFolderError(f"run.dir {name}: {why}") from None
        return name

    return Path(on_main(env, create, RunFolderError, DiskFullError))


def out_of_space(e: DiskFullError, run_dir, env, claimed: bool) -> DiskFullError:
    """``e`` with the advice that works from here. Before the run's first checkpoint the main
    rank removes what this attempt wrote in ``run_dir`` (``claimed``: the folder was found free
    for it), so the same command starts the run again, without --replace; after it, the run
    continues with --resume."""
    if env.is_main and claimed and run_dir and not checkpoints(run_dir):
        for name in earlier_run(run_dir):
            (Path(run_dir) / name).unlink(missing_ok=True)
        remove_strays(run_dir)
    if run_dir and checkpoints(run_dir):
        then = f"continue it with: alexnet2012 train --resume {run_dir}"
    elif claimed:
        then = f"start the run again with the same command (this attempt's files in {run_dir} "
        then += "were removed)"
    else:
        then = "start the run again with the same command"
    return DiskFullError(f"{e.situation}; free some space or move the folder, then {then}",
                         e.situation)  # fmt: skip


def resume_advice(run_dir) -> str:
    """What to do after a diverged loss: the checkpoint to continue from with a lower learning
    rate, with the loss each kept one was saved at (the newest may already be diverged, though
    finite); or, when none was saved before the loss rose, the command that starts again."""
    saved = checkpoints(run_dir)  # newest first
    lower = _lower_lr(run_dir)
    if not saved:
        return f"No checkpoint was saved yet in {run_dir}. {_start_again(run_dir, lower)}"
    losses = _losses(run_dir)
    lowest = min(losses.values(), default=math.nan)
    kept = [(p, step_of(p)) for p in saved]
    notes = [f"step {at} (training loss {losses.get(at, math.nan):.4g})" for _, at in kept]
    said = (f"Checkpoints kept in {run_dir}: {', '.join(notes)}; the lowest logged loss was "
            f"{lowest:.4g}.")  # fmt: skip
    # a checkpoint saved before the loss rose: its loss within twice the lowest logged
    sound = [p for p, at in kept if losses.get(at, math.inf) <= 2 * lowest] if losses else saved
    if not sound:  # resuming from any of them diverges again, whatever the learning rate
        again = _start_again(run_dir, lower)
        return (f"{said} None is usable: each was saved after the loss had passed twice its "
                f"lowest, and a resume from it diverges again. {again}")  # fmt: skip
    resume = f"alexnet2012 train --resume {run_dir} train.lr={lower or '...'}"
    how = (
        resume
        if sound[0] == saved[0]
        else f"remove the newer checkpoints from {Path(run_dir) / 'checkpoints'} so that "
        f"{sound[0].name} is the newest, then {resume}"
    )
    return f"{said} Lower train.lr or check the data, then: {how}"


def _losses(run_dir) -> dict[int, float]:
    """The logged training loss by step (empty on a rank without the run folder)."""
    losses = {}
    try:
        for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            if "train/loss" in row:
                losses[row["step"]] = row["train/loss"]
    except (OSError, ValueError):
        pass  # a rank without the run folder, or a line cut short
    return losses


def _lower_lr(run_dir) -> str | None:
    """A tenth of the run's ``train.lr`` (from its config.yaml), or None when unknown."""
    try:
        lr = float(yaml.safe_load((Path(run_dir) / "config.yaml").read_text())["train"]["lr"])
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
        return None
    return f"{lr / 10:g}"


def _start_again(run_dir, lower: str | None) -> str:
    """The command that trains the run again from the start, in a new folder, at ``lower``."""
    if lower is None:
        return "Lower train.lr or check the data, and start again in a new run.dir"
    return (f"Lower the learning rate (or check the data) and start again in a new folder: "
            f"alexnet2012 train --config {Path(run_dir) / 'config.yaml'} "
            f"run.dir={Path(run_dir)}-lr{lower} train.lr={lower}")  # fmt: skip
