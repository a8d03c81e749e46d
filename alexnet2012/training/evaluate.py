"""Evaluation over a whole split: top-1/top-5 error and loss, centre view or 10 views (ref §3)."""

from __future__ import annotations

import contextlib
import math

import torch

from alexnet2012.config import Config
from alexnet2012.control import watchdog
from alexnet2012.training.progress import progress
from alexnet2012.training.state import correct_counts
from alexnet2012.training.step import autocast, layout


def evaluate(ex, data, cfg: Config, ten_view: bool = False, split: str = "val") -> dict:
    """Top-1/top-5 error and loss over ``split`` ("val" or "test"; softmax averaged over views).

    Keys ``val/...`` (``val10/...`` for 10 views), or ``test/...`` for the test split. The
    exchanges it makes are not added to the training counters. A compiled network's first
    evaluation of a split compiles its graphs, under the patient timeout (control/watchdog.py).
    """
    sent, wait = dict(ex.group.bytes_sent), dict(ex.group.wait_s)
    first = getattr(ex, "compiled", False) and (split, ten_view) not in ex.compiled_for
    slow = watchdog.patient(cfg, watchdog.groups_of(ex)) if first else contextlib.nullcontext()
    try:
        with slow:
            out = _evaluate(ex, data, cfg, ten_view, split)
        if first:
            ex.compiled_for.add((split, ten_view))
        return out
    finally:
        ex.group.bytes_sent.clear(), ex.group.bytes_sent.update(sent)
        ex.group.wait_s.clear(), ex.group.wait_s.update(wait)


def _evaluate(ex, data, cfg: Config, ten_view: bool, split: str) -> dict:
    ex.model.eval()
    acc = torch.zeros(4, device=data.device)  # loss sum, top-1 right, top-5 right, images
    bs = cfg.train.batch_size
    main = ex.group.rank == 0 and ex.data.rank == 0
    bar = progress(main, math.ceil(data.sizes[split] / (bs * ex.data.size)), 0, unit="batch")
    with torch.no_grad(), autocast(cfg, data.device):
        shard = (ex.data.rank, ex.data.size)
        for x, y in data.eval_batches(bs, ten_view, shard, split):
            bar.update(1)
            watchdog.beat()  # progress, for the stall watchdog (NCCL)
            views = x if ten_view else x.unsqueeze(0)
            probs = None
            for v in views:
                out = ex.forward(layout(v, cfg))
                if ex.holds_logits:
                    p = out.float().softmax(1)
                    probs = p if probs is None else probs + p
            if ex.holds_logits:
                probs = probs / len(views)
                nll = -probs.clamp_min(1e-12).log().gather(1, y[:, None]).sum()
                acc += torch.stack([nll, *correct_counts(probs, y), y.new_tensor(len(y))])
    bar.close()
    ex.model.train()
    loss, c1, c5, n = ex.share(acc).tolist()
    prefix = split + ("10" if ten_view else "")
    return {
        f"{prefix}/loss": loss / n,
        f"{prefix}/top1_err": 1 - c1 / n,
        f"{prefix}/top5_err": 1 - c5 / n,
    }
