"""Train one run: train an epoch, evaluate, checkpoint; repeat.

    alexnet2012 train --config configs/debug.yaml train.max_steps=20 run.dir=runs/debug
    torchrun --standalone --nproc_per_node=2 -m alexnet2012 train --config configs/debug.yaml
    alexnet2012 train --resume runs/debug

One process runs the whole network (the two-tower model as one grouped network, or a
baseline); under torchrun with two ranks each rank holds one tower (:mod:`..parallel`). Every
random draw (data order, augmentation, dropout) is a function of (seed, epoch, step), so both
ranks see the same batch and a resumed run continues exactly as an unbroken one.
"""

from __future__ import annotations

import logging
import math

import torch

from alexnet2012 import config
from alexnet2012.config import Config
from alexnet2012.control import hooks, jobs, torchrun, watchdog
from alexnet2012.control.stopping import Interrupted, StopVote, stop_on_signals
from alexnet2012.data import build_data
from alexnet2012.files import DiskFullError
from alexnet2012.nets.build import input_size
from alexnet2012.parallel import comm
from alexnet2012.parallel.execution import build_execution
from alexnet2012.training import results, snapshot
from alexnet2012.training.evaluate import evaluate
from alexnet2012.training.optim import build_optimizer
from alexnet2012.training.progress import progress
from alexnet2012.training.run import Run, claim, out_of_space, resolve_run_dir, resume_advice
from alexnet2012.training.schedule import build_schedule
from alexnet2012.training.snapshot import TrainingError
from alexnet2012.training.step import TrainStep
from alexnet2012.training.tracking import make_logger

__all__ = ["TrainingError", "evaluate", "run"]
log = logging.getLogger(__name__)


def run(
    cfg: Config, resume: bool = False, env: torchrun.Env | None = None, replace: bool = False
) -> dict:
    """Train ``cfg`` (or continue the run in ``cfg.run.dir`` when ``resume``); the summary.

    ``env``: an already started process group (tests); by default torchrun's, or one process.
    ``replace``: start afresh in a folder where an earlier run stopped before its first
    checkpoint (its files are set aside, not deleted).
    """
    with stop_on_signals():
        if env is not None:
            with torchrun.peer_failures(env, cfg.parallel.timeout_s, cfg.run.dir):
                return _train(cfg, env, resume, replace)
        with torchrun.session(cfg.parallel.timeout_s, cfg.train.device) as env:
            with torchrun.peer_failures(env, cfg.parallel.timeout_s, cfg.run.dir):
                return _train(cfg, env, resume, replace)


def _train(cfg: Config, env, resume: bool, replace: bool) -> dict:
    torch.manual_seed(cfg.seed)
    t = cfg.train
    data = build_data(cfg, input_size(cfg), env.device)
    per_epoch = data.full_batches(t.batch_size, env.data.size)  # before anything is written
    ex, forward = build_execution(cfg, env, data.num_classes, data.in_channels)
    opt = build_optimizer(ex.named_parameters(), t)
    r, claimed = Run(cfg.run.dir, cfg, env, ex, opt, build_schedule(opt, t)), False
    try:
        r.dir = resolve_run_dir(cfg, env)
        claim(r, resume, replace)  # this job's folder from here on
        claimed = not resume
        return _loop(r, forward, data, per_epoch, resume)
    except DiskFullError as e:  # at any moment: the advice that works from here
        raise out_of_space(e, r.dir, env, claimed) from None
    finally:
        r.release()


def _loop(r: Run, forward, data, per_epoch: int, resume: bool) -> dict:
    cfg, env, ex, opt, t = r.cfg, r.env, r.ex, r.opt, r.cfg.train
    total = per_epoch * t.epochs if not t.max_steps else min(t.max_steps, per_epoch * t.epochs)
    with watchdog.patient(cfg, watchdog.groups_of(env)):  # a resume may read a large file
        state = snapshot.begin(r, resume, total)  # fresh, or restored
    checked = state.step  # the loss is known finite up to here
    # rank 0 may wait up to wandb.init_timeout_s for W&B's server: the others wait for it
    # under the patient timeout, not in the first exchange under parallel.timeout_s
    with watchdog.patient(cfg, watchdog.groups_of(env)):
        logger = _together(r, lambda: make_logger(  # config.yaml: a full disk stops all ranks
            r.dir, config.to_dict(cfg), cfg.wandb, env.is_main,
            resume_step=state.step if resume or jobs.restarted() else None,
            run_name=cfg.run.name or None))  # fmt: skip
    shard = (env.data.rank, env.data.size)  # both towers of a pair read the same shard
    env.group.reset_counters()
    bar = progress(env.is_main, total, state.step)
    ex.model.train()
    state.restart_clock()
    hooks.current().start(env.rank)
    step = TrainStep(cfg, ex, forward, opt, env.rank)  # the step bench times
    images = t.batch_size * env.data.size  # per step, over all replicas
    vote = StopVote(env)  # ranks agree every 10 steps, so they all stop at the same step
    while state.step < total:
        epoch, start = divmod(state.step, per_epoch)
        r.sched.begin_epoch(epoch)  # the c12 table's lr for this epoch; others keep theirs
        for x, y in data.train_batches(epoch, t.batch_size, cfg.seed, start, shard):
            loss, out = step(x, y, state.step)
            state.add(loss.detach().float(), out, y, ex.holds_logits)
            state.step += 1
            hooks.current().after_step(state.step, env.rank)
            bar.update(1)
            end_of_epoch = state.step % per_epoch == 0 or state.step == total
            save_now = t.checkpoint_every and state.step % t.checkpoint_every == 0
            if state.step % max(t.log_every, 1) == 0 or end_of_epoch or save_now:
                metrics = {**state.flush(ex, opt, images), "epoch": state.step / per_epoch}
                _check_finite(metrics, checked, state.step, r.dir)  # before any save
                checked = state.step
                logger.log(metrics, state.step)
                _show(bar, env, metrics, state.step, total)
            if t.eval_every and state.step % t.eval_every == 0 and not end_of_epoch:
                _validate(r, data, logger, per_epoch, at_epoch_end=False)
            if save_now and not end_of_epoch:
                _save(r)
            if end_of_epoch:
                break
            if vote.poll(state.step):
                if not save_now:
                    _save(r)
                _interrupted(logger, r)
        at_end = state.step % per_epoch == 0  # else the last step of a shortened run
        val = _validate(r, data, logger, per_epoch, at_epoch_end=at_end)
        if at_end:
            r.sched.step(val["val/top1_err"])
        _save(r)
        if state.step < total and vote.now():
            _interrupted(logger, r)
        state.restart_clock()
    bar.close()
    summary = results.summary(r, data)
    comm.barrier(env.world)  # no rank closes its connections while another still uses them
    watchdog.disarm()  # training is over: closing the logger may take long
    logger.summary(summary)
    logger.close()
    return summary


def _show(bar, env, metrics: dict, step: int, total: int) -> None:
    bar.set_postfix(loss=f"{metrics['train/loss']:.3f}")
    if getattr(bar, "quiet", False) and env.is_main:  # no terminal: plain lines
        log.info("step %d/%d  loss %.4f  top-1 err %.4f  %.0f img/s", step, total,
                 metrics["train/loss"], metrics["train/top1_err"],
                 metrics["train/images_per_s"])  # fmt: skip


def _validate(r: Run, data, logger, per_epoch: int, at_epoch_end: bool) -> dict:
    """Evaluate on the validation split, record and log it; the metrics."""
    state, env = r.state, r.env
    val = evaluate(r.ex, data, r.cfg)
    state.epoch_done(val, at_epoch_end=at_epoch_end)
    seen = state.step * r.cfg.train.batch_size * env.data.size
    logger.log({**val, "epoch": state.step / per_epoch, "images_seen": seen}, state.step)
    if env.is_main:
        log.info("epoch %.2f  val loss %.4f  val top-1 err %.4f  top-5 err %.4f",
                 state.step / per_epoch, val["val/loss"], val["val/top1_err"],
                 val["val/top5_err"])  # fmt: skip
    return val


def _save(r: Run) -> None:
    """Checkpoint (rank 0 writes); the other ranks wait for the outcome under the patient
    timeout, not in the next exchange under parallel.timeout_s (control/watchdog.py), and a
    write that fails (a full disk) stops every rank with rank 0's message, not "died"."""
    with watchdog.patient(r.cfg, watchdog.groups_of(r.env)):
        _together(r, lambda: snapshot.save(r))


def _together(r: Run, write):
    """``write()`` on every rank (only the main rank writes files), then its outcome on all:
    a write that failed there (a full disk) stops every rank with its words."""
    failed = out = None
    try:
        out = write()
    except OSError as e:  # only the main rank writes
        failed = e
    code = 0 if failed is None else 1 + isinstance(failed, DiskFullError)
    flag = comm.broadcast(torch.tensor([code], device=r.env.device), r.env.world, src=0)
    if int(flag.item()):  # rank 0 could not write: every rank stops with its words
        text = comm.broadcast_object(getattr(failed, "situation", str(failed)), r.env.world, src=0)
        raise (DiskFullError if int(flag.item()) == 2 else OSError)(text)
    return out


def _interrupted(logger, r: Run):
    # no rank exits before rank 0 has written the checkpoint: under torchrun an early exit makes
    # the agent signal the others, and a second signal would cut rank 0's save short
    comm.barrier(r.env.world)
    watchdog.disarm()
    logger.close()
    raise Interrupted(
        f"stopped by a signal at step {r.state.step}; checkpoint saved in {r.dir}. "
        f"Continue with: alexnet2012 train --resume {r.dir}"
    )


def _check_finite(metrics: dict, checked: int, step: int, run_dir) -> None:
    """TrainingError naming the steps if the loss of steps ``checked+1..step`` is not finite."""
    loss = metrics["train/loss"]
    if not math.isfinite(loss):
        steps = f"at step {step}" if step == checked + 1 else f"in steps {checked + 1}-{step}"
        raise TrainingError(
            f"training loss became {loss} {steps}; stopped before saving it. "
            f"{resume_advice(run_dir)}"
        )
