"""What a training run's checkpoint holds, and how a run starts from one or afresh.

:func:`save` gathers the canonical state on every rank (rank 0 writes it) and refuses to save
non-finite weights; :func:`restore` loads it into this rank's slices, refusing a config that
changes what the run computes (:mod:`.contract`); :func:`begin` starts a run, fresh (from
scratch, or from another run's weights: ``run.start_from``) or restored, and only once every
rank agrees on the step it starts from.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from alexnet2012 import config
from alexnet2012.control import jobs
from alexnet2012.parallel import comm
from alexnet2012.training import checkpoint, contract
from alexnet2012.training.optim import load_optimizer_state_by_name, optimizer_state_by_name
from alexnet2012.training.run import Run, resume_advice
from alexnet2012.training.state import RunState

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """The run cannot go on (a non-finite loss); the last good checkpoint is kept."""


def payload(run: Run) -> dict:
    """The whole run in the canonical layout: every rank takes part in the gathers."""
    cfg, ex, opt, sched, state = run.cfg, run.ex, run.opt, run.sched, run.state
    return {
        "config": config.to_dict(cfg),
        "model": ex.canonical_state(),
        "optimizer": ex.canonical_by_name(optimizer_state_by_name(opt)),
        "schedule": sched.state_dict(),
        "state": state.state_dict(),
        "step": state.step,
        "rng": torch.get_rng_state(),  # the baselines' nn.Dropout draws from it
        # this rank's GPU only (ranks resume from rank 0's file; the GPU count may change)
        "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
    }


def save(run: Run) -> None:
    """Checkpoint the run's step (rank 0 writes); TrainingError instead of non-finite weights."""
    run_dir, state, data = run.dir, run.state, payload(run)
    bad = [k for k, v in data["model"].items() if not torch.isfinite(v).all()]
    if bad:  # every rank holds the whole state, so all ranks stop here together
        raise TrainingError(
            f"weights {bad[0]} became non-finite by step {state.step}; not saved. "
            f"{resume_advice(run_dir)}"
        )
    if run.env.is_main:
        checkpoint.save(run_dir, data, state.step)


def restore(run: Run, total: int | None = None) -> RunState:
    """Load the newest good checkpoint of ``run.dir`` into this rank; the run's state.

    The config may change only as :mod:`.contract` allows, and the step budget ``total`` may not
    end before the checkpoint's step; either is refused before anything is loaded or written.
    """
    cfg, ex = run.cfg, run.ex
    data, path = checkpoint.load_for_resume(run.dir)
    was = config.to_dict(config.from_dict(data["config"]))
    contract.refuse_changes(path, was, config.to_dict(cfg))
    if total is not None:
        ended = (Path(run.dir) / "summary.json").is_file() and not jobs.restarted()
        contract.refuse_short_budget(run.dir, int(data["step"]), total, ended)
    ex.load_canonical(data["model"])
    load_optimizer_state_by_name(run.opt, ex.local_by_name(data["optimizer"]))
    run.sched.load_state_dict(data["schedule"])
    state = RunState()
    state.load_state_dict(data["state"])
    torch.set_rng_state(data["rng"])
    if isinstance(data.get("cuda_rng"), torch.Tensor) and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(data["cuda_rng"])  # the current device's generator
    log.info("resumed from %s at step %d", path, state.step)
    return state


def start_from(run: Run) -> None:
    """Load the weights of checkpoint ``run.start_from`` (``train --from``): a new run from
    where that one was, with its own config, step count, optimiser and schedule."""
    path = Path(run.cfg.run.start_from)
    data = checkpoint.load(path)
    was = config.to_dict(config.from_dict(data["config"]))["model"]
    diff = contract.refused({"model": was}, {"model": config.to_dict(run.cfg)["model"]})
    if diff:
        said = "; ".join(f"{k} is {_list(a)!r} there, {_list(b)!r} now" for k, a, b in diff)
        raise config.ConfigError(
            f"run.start_from {path}: its weights are of another architecture ({said});"
            " a new run from them keeps the model.* keys of that run"
        )
    run.ex.load_canonical(data["model"])
    log.info("starting from the weights of %s (step %d)", path, data["step"])


def _list(value):
    """A flattened config's tuple as the list the config holds (model.widths, model.cross)."""
    return list(value) if isinstance(value, tuple) else value


def begin(run: Run, resume: bool, total: int | None = None) -> RunState:
    """Set ``run.state``: a fresh run (never over an old one) or the restored one, once every
    rank agrees. ``total``: the run's step budget, which a resume may not end before its step.

    Each rank reads run.dir for itself, so ranks on nodes that do not share it can see different
    checkpoints; they compare the step they would start from before anything else happens.
    """
    run_dir, env = run.dir, run.env
    problem, job = None, jobs.job()
    try:
        if resume:
            state = restore(run, total)
        else:
            checkpoint.refuse_to_overwrite(run_dir)  # a new run never buries an old one
            if run.cfg and run.cfg.run.start_from:  # train --from
                start_from(run)
            state = RunState()
    except Exception as e:  # still agree below, so no rank waits for one that left
        state, problem = None, e
    steps = _gather_steps(env, -1 if state is None else state.step)
    if problem is not None and min(steps) == max(steps):  # every rank met the same problem
        if not resume and job and env.is_main and checkpoint.checkpoints(run_dir):
            checkpoint.mark_refused(run_dir, job)  # a reused run id never takes the run over
        raise problem
    if min(steps) != max(steps):
        mine = f" (this rank: {problem})" if problem is not None else ""
        raise checkpoint.CheckpointError(
            f"the ranks found different checkpoints in {run_dir} (steps {steps} by rank, -1: "
            "none usable): run.dir must be one folder that every node sees, on a shared "
            f"filesystem{mine}"
        )
    if not resume and env.is_main and job:
        checkpoint.mark_job(run_dir, job)  # its restarts, and only they, resume this folder
    run.state = state
    return state


def _gather_steps(env, step: int) -> list[int]:
    mine = torch.tensor([step], device=env.device)
    return [int(s) for s in comm.all_gather_cat(mine, env.world, 0).tolist()]
