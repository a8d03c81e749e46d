"""Train one run: train an epoch, evaluate, checkpoint; repeat.

    alexnet2012 train --config configs/debug.yaml train.max_steps=20 run.dir=runs/debug
    torchrun --standalone --nproc_per_node=2 -m alexnet2012 train --config configs/debug.yaml
    alexnet2012 train --resume runs/debug

One process runs the whole network (the two-tower model as one grouped network, or a
baseline); under torchrun with two ranks each rank holds one tower (:mod:`.parallel`). Every
random draw (data order, augmentation, dropout) is a function of (seed, epoch, step), so both
ranks see the same batch and a resumed run continues exactly as an unbroken one.
"""

from __future__ import annotations

import logging
import math
import time

import torch

from . import comm, config, distributed, faults, snapshot
from .build import build_execution, input_size
from .config import Config
from .data.loader import build_data
from .layers import set_dropout_step
from .optim import build_optimizer
from .parallel import Execution
from .runinfo import correct_counts, peak_memory, progress, resolve_run_dir
from .schedule import build_schedule
from .snapshot import TrainingError
from .stopping import Interrupted, StopVote, stop_on_signals
from .tracking import make_logger

log = logging.getLogger(__name__)


def evaluate(
    ex: Execution, data, cfg: Config, ten_view: bool = False, split: str = "val"
) -> dict[str, float]:
    """Top-1/top-5 error and loss over ``split`` ("val" or "test"; softmax averaged over views).

    Keys ``val/...`` (``val10/...`` for 10 views), or ``test/...`` for the test split.
    """
    ex.model.eval()
    acc = torch.zeros(4, device=data.device)  # loss sum, top-1 right, top-5 right, images
    with torch.no_grad(), _autocast(cfg, data.device):
        shard = (ex.data.rank, ex.data.size)
        for x, y in data.eval_batches(cfg.train.batch_size, ten_view, shard, split):
            views = x if ten_view else x.unsqueeze(0)
            probs = None
            for v in views:
                out = ex.forward(_layout(v, cfg))
                if ex.holds_logits:
                    p = out.float().softmax(1)
                    probs = p if probs is None else probs + p
            if ex.holds_logits:
                probs = probs / len(views)
                nll = -probs.clamp_min(1e-12).log().gather(1, y[:, None]).sum()
                acc += torch.stack([nll, *correct_counts(probs, y), y.new_tensor(len(y))])
    ex.model.train()
    loss, c1, c5, n = ex.share(acc).tolist()
    prefix = split + ("10" if ten_view else "")
    return {
        f"{prefix}/loss": loss / n,
        f"{prefix}/top1_err": 1 - c1 / n,
        f"{prefix}/top5_err": 1 - c5 / n,
    }


def _autocast(cfg: Config, device: torch.device):
    on = cfg.train.amp and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def _layout(x: torch.Tensor, cfg: Config) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if cfg.train.channels_last else x


def run(cfg: Config, resume: bool = False, env: distributed.Env | None = None) -> dict:
    """Train ``cfg`` (or continue the run in ``cfg.run.dir`` when ``resume``); the summary.

    ``env``: an already started process group (tests); by default torchrun's, or one process.
    """
    with stop_on_signals():
        if env is not None:
            with distributed.peer_failures(env, cfg.parallel.timeout_s, cfg.run.dir):
                return _train(cfg, env, resume)
        with distributed.session(cfg.parallel.timeout_s, cfg.train.device) as env:
            with distributed.peer_failures(env, cfg.parallel.timeout_s, cfg.run.dir):
                return _train(cfg, env, resume)


def _train(cfg: Config, env, resume: bool) -> dict:
    torch.manual_seed(cfg.seed)
    dev, t = env.device, cfg.train
    data = build_data(cfg, input_size(cfg), dev)
    per_epoch = data.full_batches(t.batch_size, env.data.size)  # before anything is written
    ex, forward = build_execution(cfg, env, data.num_classes, data.in_channels)
    model = ex.model
    opt = build_optimizer(ex.named_parameters(), t)
    sched = build_schedule(opt, t)
    run_dir = resolve_run_dir(cfg, env)
    state = snapshot.begin(run_dir, cfg, env, ex, opt, sched, resume)  # fresh, or restored
    checked = state.step  # the loss is known finite up to here
    logger = make_logger(
        run_dir,
        config.to_dict(cfg),
        cfg.wandb,
        env.is_main,
        resume_step=state.step if resume or distributed.restart_count() else None,
        run_name=cfg.run.name or None,
    )
    shard = (env.data.rank, env.data.size)  # both towers of a pair read the same shard
    total = per_epoch * t.epochs if not t.max_steps else min(t.max_steps, per_epoch * t.epochs)
    env.group.reset_counters()
    bar = progress(env.is_main, total, state.step)
    model.train()
    state.restart_clock()
    faults.start(env.rank)  # fault injection (tests); a no-op unless ALEXNET2012_FAULT is set
    drop_seed = cfg.seed + 1_000_003 * env.data.rank  # replicas draw their own dropout masks
    images = t.batch_size * env.data.size  # per step, over all replicas
    vote = StopVote(env)  # ranks agree every 10 steps, so they all stop at the same step
    while state.step < total:
        epoch, start = divmod(state.step, per_epoch)
        sched.begin_epoch(epoch)  # the c12 table's lr for this epoch; others keep theirs
        for x, y in data.train_batches(epoch, t.batch_size, cfg.seed, start, shard):
            set_dropout_step(model, state.step, drop_seed)  # masks: f(seed, step, replica)
            with _autocast(cfg, dev):
                out = forward(_layout(x, cfg))
                loss = faults.loss(ex.loss(out, y), state.step + 1, env.rank)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state.add(loss.detach().float(), out, y, ex.holds_logits)
            state.step += 1
            faults.after_step(state.step, env.rank)
            bar.update(1)
            end_of_epoch = state.step % per_epoch == 0 or state.step == total
            save_now = t.checkpoint_every and state.step % t.checkpoint_every == 0
            if state.step % max(t.log_every, 1) == 0 or end_of_epoch or save_now:
                metrics = state.flush(ex, opt, images)
                _check_finite(metrics, checked, state.step, run_dir)  # before any save
                checked = state.step
                logger.log(metrics, state.step)
                bar.set_postfix(loss=f"{metrics['train/loss']:.3f}")
                if getattr(bar, "quiet", False) and env.is_main:  # no terminal: plain lines
                    log.info(
                        "step %d/%d  loss %.4f  top-1 err %.4f  %.0f img/s",
                        state.step, total, metrics["train/loss"], metrics["train/top1_err"],
                        metrics["train/images_per_s"],
                    )  # fmt: skip
            if t.eval_every and state.step % t.eval_every == 0 and not end_of_epoch:
                _validate(env, ex, data, cfg, state, logger, per_epoch, at_epoch_end=False)
            if save_now and not end_of_epoch:
                snapshot.save(run_dir, cfg, ex, opt, sched, state, env)
            if end_of_epoch:
                break
            if vote.poll(state.step):
                if not save_now:
                    snapshot.save(run_dir, cfg, ex, opt, sched, state, env)
                _interrupted(logger, state, run_dir, env)
        at_end = state.step % per_epoch == 0  # else the last step of a shortened run
        val = _validate(env, ex, data, cfg, state, logger, per_epoch, at_epoch_end=at_end)
        if at_end:
            sched.step(val["val/top1_err"])
        snapshot.save(run_dir, cfg, ex, opt, sched, state, env)
        if state.step < total and vote.now():
            _interrupted(logger, state, run_dir, env)
        state.restart_clock()
    bar.close()
    summary = _summary(cfg, env, ex, data, state, opt)
    comm.barrier(env.world)  # no rank closes its connections while another still uses them
    logger.summary(summary)
    logger.close()
    return summary


def _validate(env, ex, data, cfg, state, logger, per_epoch: int, at_epoch_end: bool) -> dict:
    """Evaluate on the validation split, record and log it; the metrics."""
    val = _uncounted(env.group, evaluate, ex, data, cfg)
    state.epoch_done(val, at_epoch_end=at_epoch_end)
    seen = state.step * cfg.train.batch_size * env.data.size
    logger.log({**val, "epoch": state.step / per_epoch, "images_seen": seen}, state.step)
    if env.is_main:
        log.info("epoch %.2f  val loss %.4f  val top-1 err %.4f  top-5 err %.4f",
                 state.step / per_epoch, val["val/loss"], val["val/top1_err"],
                 val["val/top5_err"])  # fmt: skip
    return val


def _interrupted(logger, state, run_dir, env):
    # no rank exits before rank 0 has written the checkpoint: under torchrun an early exit makes
    # the agent signal the others, and a second signal would cut rank 0's save short
    comm.barrier(env.world)
    logger.close()
    raise Interrupted(
        f"stopped by a signal at step {state.step}; checkpoint saved in {run_dir}. "
        f"Continue with: alexnet2012 train --resume {run_dir}"
    )


def _uncounted(group, fn, *args):
    """Run ``fn`` without adding its exchanges to the training counters."""
    sent, wait = dict(group.bytes_sent), dict(group.wait_s)
    try:
        return fn(*args)
    finally:
        group.bytes_sent.clear(), group.bytes_sent.update(sent)
        group.wait_s.clear(), group.wait_s.update(wait)


def _check_finite(metrics: dict, checked: int, step: int, run_dir) -> None:
    """TrainingError naming the steps if the loss of steps ``checked+1..step`` is not finite."""
    loss = metrics["train/loss"]
    if not math.isfinite(loss):
        steps = f"at step {step}" if step == checked + 1 else f"in steps {checked + 1}-{step}"
        raise TrainingError(
            f"training loss became {loss} {steps}; stopped before saving it, the last good "
            f"checkpoint in {run_dir} is kept. Lower train.lr or check the data, then "
            f"continue with: alexnet2012 train --resume {run_dir} train.lr=..."
        )


def _summary(cfg, env, ex, data, state, opt) -> dict:
    out = {"val_set": data.describe("val"), "test_set": data.describe("test")}
    # the last validation is the test result when "val" is the whole test split, and current
    same = not data.held_out and data.sizes["val"] == data.sizes["test"]
    for views in (False, True) if cfg.data.ten_view else (False,):
        if not views and same and state.last_val_step == state.step:
            res = {k.replace("val/", "test/"): v for k, v in state.last_val.items()}
        else:  # the whole test split, once, at the end
            res = _uncounted(env.group, evaluate, ex, data, cfg, views, "test")
        out.update(res)
    params = ex.model.parameters()
    mine = [ex.param_bytes(), peak_memory(env.device), sum(p.numel() for p in params)]
    mine = torch.tensor([mine], dtype=torch.float64, device=env.device)
    per_rank = comm.all_gather_cat(mine, env.world, 0).tolist()  # one row per rank
    sent, steps = env.group.bytes_sent, max(state.steps_run, 1)
    out.update(state.summary(cfg.train.batch_size * env.data.size))
    out.update({
        "model": cfg.model.name, "preset": cfg.model.preset, "world_size": env.world_size,
        "params_total": sum(math.prod(s) for s in ex.full_shapes.values()),
        "params_per_rank": [int(v[2]) for v in per_rank],
        "param_bytes_per_rank": [int(v[0]) for v in per_rank],
        "peak_memory_per_rank": [int(v[1]) for v in per_rank],
        "bytes_exchanged_per_step": sum(sent.values()) / steps,
        "bytes_exchanged_per_point": {k: v / steps for k, v in sent.items()},
        "exchange_wait_share": sum(env.group.wait_s.values()) / max(state.train_time, 1e-9),
        "device": str(env.device), "torch": torch.__version__,
        "final_lr": opt.param_groups[0]["lr"], "wall_s": time.time() - state.started,
    })  # fmt: skip
    return out
