"""Data parallelism across tower pairs: 2 towers x 2 replicas at batch B == 2 towers x 1 at 2B."""

import json

import numpy as np
import torch
from spawn import run_ranks

from alexnet2012 import checkpoint, distributed, train
from alexnet2012.config import load_config

# no augmentation and no dropout: the per-image randomness is the only thing that depends on
# how a global batch is cut into shards, so without it the two layouts compute the same updates
BASE = [
    "data.name=synthetic", "data.synthetic_size=128", "data.flip=false", "data.resize=0",
    "model.dropout=none", "train.max_steps=6", "train.log_every=1", "train.epochs=2",
    "wandb.mode=disabled", "train.momentum=0.9",
]  # fmt: skip


def _run(rank, run_dir, batch):
    cfg = load_config(
        "configs/debug.yaml", [*BASE, f"run.dir={run_dir}", f"train.batch_size={batch}"]
    )
    env = distributed.mesh_env(
        rank, torch.distributed.get_world_size(), rank, torch.device("cpu"), "gloo"
    )
    summary = train.run(cfg, env=env)
    return {"summary": summary, "tower": env.group.rank, "replica": env.data.rank}


def losses(run_dir):
    rows = [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def test_two_replicas_equal_one_pair_at_twice_the_batch(tmp_path):
    one = tmp_path / "pair"
    run_ranks(_run, 2, tmp_path, args=(str(one), 16), timeout=240)
    two = tmp_path / "replicas"
    out = run_ranks(_run, 4, tmp_path, args=(str(two), 8), timeout=300)
    # ranks 2i and 2i+1 form tower pair i
    assert [(o["tower"], o["replica"]) for o in out] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    a, b = losses(one), losses(two)
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(b, a, rtol=1e-5)
    wa = checkpoint.load_latest(one)[0]["model"]
    wb = checkpoint.load_latest(two)[0]["model"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6, msg=k)
    s = out[0]["summary"]
    assert s["world_size"] == 4 and len(s["params_per_rank"]) == 4
    assert s["test/top1_err"] == out[2]["summary"]["test/top1_err"]
