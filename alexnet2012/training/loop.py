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
from alexnet2012.control import torchrun
from alexnet2012.control.runcontrol import RunControl
from alexnet2012.data import build_data
from alexnet2012.files import DiskFullError
from alexnet2012.nets.build import input_size
from alexnet2012.parallel.execution import build_execution
from alexnet2012.training import results, snapshot
from alexnet2012.training.evaluate import evaluate
from alexnet2012.training.optim import build_optimizer
from alexnet2012.training.progress import progress
from alexnet2012.training.run import Run, folder_check, out_of_space, resolve_run_dir, resume_advice
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
    with RunControl.start(cfg, env) as ctl:
        return _train(cfg, ctl, resume, replace)


def _train(cfg: Config, ctl: RunControl, resume: bool, replace: bool) -> dict:
    torch.manual_seed(cfg.seed)
    t, env = cfg.train, ctl.env
    data = build_data(cfg, input_size(cfg), env.device)
    per_epoch = data.full_batches(t.batch_size, env.data.size)  # before anything is written
    ex, forward = build_execution(cfg, env, data.num_classes, data.in_channels)
    opt = build_optimizer(ex.named_parameters(), t)
    r, claimed = Run(cfg.run.dir, cfg, env, ex, opt, build_schedule(opt, t)), False
    try:
        r.dir = resolve_run_dir(cfg, env)
        ctl.claim(r.dir, folder_check(r.dir, resume, replace))  # this job's folder from here
        claimed = not resume
        total = per_epoch * t.epochs if not t.max_steps else min(t.max_steps, per_epoch * t.epochs)
        with ctl.patient():  # a resume may read a large file
            snapshot.begin(r, resume, total)  # fresh, or restored: r.state
        ctl.has_state()
        # rank 0 may wait up to wandb.init_timeout_s for W&B's server: the others wait for it
        # in a patient section, not in the first exchange under parallel.timeout_s
        with ctl.patient():
            logger = ctl.together(lambda: make_logger(  # config.yaml: a full disk stops all
                r.dir, config.to_dict(cfg), cfg.wandb, env.is_main,
                resume_step=r.state.step if resume or ctl.restarted() else None,
                run_name=cfg.run.name or None))  # fmt: skip
        step = TrainStep(cfg, ex, forward, opt, env.rank)  # the step bench times
        _loop(r, ctl, step, data, per_epoch, total, logger)
        summary = results.summary(r, data)
        ctl.finish()
        logger.summary(summary)
        logger.close()
        return summary
    except DiskFullError as e:  # at any moment: the advice that works from here
        raise out_of_space(e, r.dir, env, claimed) from None


def _loop(r: Run, ctl: RunControl, step, data, per_epoch: int, total: int, logger) -> None:
    """The recipe: a step on each batch; every ``log_every`` steps log, every ``eval_every``
    validate, every ``checkpoint_every`` save; at each epoch's end validate, adjust the
    learning rate, save."""
    cfg, state, t = r.cfg, r.state, r.cfg.train
    shard = (r.env.data.rank, r.env.data.size)  # both towers of a pair read the same shard
    checked = state.step  # the loss is known finite up to here
    bar = _start(r, ctl, total)

    def save():
        ctl.save(lambda: snapshot.save(r))

    while state.step < total:
        epoch, start = divmod(state.step, per_epoch)
        r.sched.begin_epoch(epoch)  # the c12 table's lr for this epoch; others keep theirs
        for x, y in data.train_batches(epoch, t.batch_size, cfg.seed, start, shard):
            loss, out = step(x, y, state.step)
            state.add(loss.detach().float(), out, y, r.ex.holds_logits)
            state.step += 1
            ctl.stepped(state.step)
            bar.update(1)
            last = state.step % per_epoch == 0 or state.step == total
            save_now = _every(state.step, t.checkpoint_every)
            if _every(state.step, max(t.log_every, 1)) or last or save_now:
                checked = _log_train(r, logger, bar, per_epoch, total, checked)
            if _every(state.step, t.eval_every) and not last:
                _validate(r, data, logger, per_epoch, at_epoch_end=False)
            if save_now and not last:
                save()
            if last:
                break
            if ctl.stop_asked(state.step):
                if not save_now:
                    save()
                raise ctl.stop(state.step, r.dir, logger.close)
        at_end = state.step % per_epoch == 0  # else the last step of a shortened run
        val = _validate(r, data, logger, per_epoch, at_epoch_end=at_end)
        if at_end:
            r.sched.step(val["val/top1_err"])
        save()
        if state.step < total and ctl.stop_asked(state.step, at_once=True):
            raise ctl.stop(state.step, r.dir, logger.close)
        state.restart_clock()
    bar.close()


def _every(step: int, n: int) -> bool:
    """Whether ``step`` is one of every ``n`` (never when ``n`` is 0: off)."""
    return bool(n) and step % n == 0


def _start(r: Run, ctl: RunControl, total: int):
    """Just before the first step: counters zeroed, the clock started, the progress bar."""
    r.env.group.reset_counters()
    bar = progress(r.env.is_main, total, r.state.step)
    r.ex.model.train()
    r.state.restart_clock()
    ctl.begin()
    return bar


def _log_train(r: Run, logger, bar, per_epoch: int, total: int, checked: int) -> int:
    """Log the training metrics since the last log, checked finite before any save; the step
    up to which the loss is now known finite."""
    state = r.state
    metrics = {**state.flush(r.ex, r.opt, r.images_per_step), "epoch": state.step / per_epoch}
    _check_finite(metrics, checked, state.step, r.dir)
    logger.log(metrics, state.step)
    _show(bar, r.env, metrics, state.step, total)
    return state.step


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
    seen = state.images_seen(r.images_per_step)
    logger.log({**val, "epoch": state.step / per_epoch, "images_seen": seen}, state.step)
    if env.is_main:
        log.info("epoch %.2f  val loss %.4f  val top-1 err %.4f  top-5 err %.4f",
                 state.step / per_epoch, val["val/loss"], val["val/top1_err"],
                 val["val/top5_err"])  # fmt: skip
    return val


def _check_finite(metrics: dict, checked: int, step: int, run_dir) -> None:
    """TrainingError naming the steps if the loss of steps ``checked+1..step`` is not finite."""
    loss = metrics["train/loss"]
    if not math.isfinite(loss):
        steps = f"at step {step}" if step == checked + 1 else f"in steps {checked + 1}-{step}"
        raise TrainingError(
            f"training loss became {loss} {steps}; stopped before saving it. "
            f"{resume_advice(run_dir)}"
        )
