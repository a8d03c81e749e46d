"""What a finished run reports: test figures, throughput, memory and exchanges per rank."""

from __future__ import annotations

import math
import time

import torch

from alexnet2012.parallel import comm
from alexnet2012.training.evaluate import evaluate
from alexnet2012.training.run import Run
from alexnet2012.training.state import peak_memory


def summary(run: Run, data) -> dict:
    """The run's summary (``summary.json``); every rank takes part, every rank gets it."""
    cfg, env, ex, state = run.cfg, run.env, run.ex, run.state
    out = {"val_set": data.describe("val"), "test_set": data.describe("test")}
    # the last validation is the test result when "val" is the whole test split, and current
    same = not data.held_out and data.sizes["val"] == data.sizes["test"]
    for views in (False, True) if cfg.data.ten_view else (False,):
        if not views and same and state.last_val_step == state.step:
            res = {k.replace("val/", "test/"): v for k, v in state.last_val.items()}
        else:  # the whole test split, once, at the end
            res = evaluate(ex, data, cfg, views, "test")
        out.update(res)
    params = ex.model.parameters()
    sent, steps = env.group.bytes_sent, max(state.steps_run, 1)
    wait = sum(env.group.wait_s.values()) / max(state.train_time, 1e-9)
    mine = [ex.param_bytes(), peak_memory(env.device), sum(p.numel() for p in params),
            sum(sent.values()) / steps, wait]  # fmt: skip
    mine = torch.tensor([mine], dtype=torch.float64, device=env.device)
    per_rank = comm.all_gather_cat(mine, env.world, 0).tolist()  # one row per rank
    out.update(state.summary(run.images_per_step))
    out.update({
        "model": cfg.model.name, "preset": cfg.model.preset, "world_size": env.world_size,
        "params_total": sum(math.prod(s) for s in ex.full_shapes.values()),
        "params_per_rank": [int(v[2]) for v in per_rank],
        "param_bytes_per_rank": [int(v[0]) for v in per_rank],
        "peak_memory_per_rank": [int(v[1]) for v in per_rank],
        "bytes_exchanged_per_step_per_rank": [v[3] for v in per_rank],
        "exchange_wait_share_per_rank": [v[4] for v in per_rank],
        "bytes_exchanged_per_step": sum(sent.values()) / steps,
        "bytes_exchanged_per_point": {k: v / steps for k, v in sent.items()},
        "exchange_wait_share": wait,
        "device": str(env.device), "torch": torch.__version__,
        "final_lr": run.opt.param_groups[0]["lr"], "wall_s": time.time() - state.started,
    })  # fmt: skip
    return out
