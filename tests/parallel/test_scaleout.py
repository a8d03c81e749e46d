"""Data parallelism across tower pairs: 2 towers x 2 replicas at batch B == 2 towers x 1 at 2B.

Checked twice: four spawned ranks, and launch/multinode.sh as two "nodes" of two processes on
this machine (torchrun's c10d rendezvous on localhost), both against one pair at batch 2B.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from spawn import run_ranks

from alexnet2012.config import load_config
from alexnet2012.control import torchrun
from alexnet2012.training import checkpoint, loop

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
    env = torchrun.mesh_env(
        rank, torch.distributed.get_world_size(), rank, torch.device("cpu"), "gloo"
    )
    summary = loop.run(cfg, env=env)
    return {"summary": summary, "tower": env.group.rank, "replica": env.data.rank}


def losses(run_dir):
    rows = [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def assert_same_updates(one, two):
    a, b = losses(one), losses(two)
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(b, a, rtol=1e-5)
    wa = checkpoint.load_latest(one)[0]["model"]
    wb = checkpoint.load_latest(two)[0]["model"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """One tower pair at batch 16: what two replicas at batch 8 must reproduce."""
    tmp = tmp_path_factory.mktemp("pair")
    run_ranks(_run, 2, tmp, args=(str(tmp / "run"), 16), timeout=240)
    return tmp / "run"


def test_two_replicas_equal_one_pair_at_twice_the_batch(tmp_path, pair):
    two = tmp_path / "replicas"
    out = run_ranks(_run, 4, tmp_path, args=(str(two), 8), timeout=300)
    # ranks 2i and 2i+1 form tower pair i
    assert [(o["tower"], o["replica"]) for o in out] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert_same_updates(pair, two)
    s = out[0]["summary"]
    assert s["world_size"] == 4 and len(s["params_per_rank"]) == 4
    # the sharded evaluation over both replicas scores the whole test set as the pair did
    one = json.loads((pair / "summary.json").read_text())
    assert abs(s["test/top1_err"] - one["test/top1_err"]) < 1e-9
    assert out[2]["summary"]["test/loss"] == s["test/loss"]  # every rank reports the same


def test_multinode_launcher_two_nodes_of_two(tmp_path, pair):
    root = Path(__file__).resolve().parents[2]
    bindir = str(Path(sys.executable).parent)
    if not shutil.which("torchrun", path=bindir):
        pytest.skip(f"no torchrun beside {sys.executable}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch = r"^(ALEXNET2012_|TORCHELASTIC|MASTER_)|RANK$|WORLD_SIZE$"  # none of the caller's
    env = {k: v for k, v in os.environ.items() if not re.search(launch, k)}
    env.update(PATH=f"{bindir}:{env['PATH']}", PYTHONPATH=str(root), OMP_NUM_THREADS="1",
               NNODES="2", GPUS_PER_NODE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               RDZV_ID=f"test{port}", MAX_RESTARTS="0", ALEXNET2012_NO_BAR="1")  # fmt: skip
    run_dir = tmp_path / "nodes"  # through the launcher's run-folder default, not run.dir
    env["ALEXNET2012_RUN_DIR"] = str(run_dir)
    argv = ["bash", "launch/multinode.sh", "--config", "configs/debug.yaml", *BASE,
            "train.batch_size=8"]  # fmt: skip
    no_id = {k: v for k, v in env.items() if k != "RDZV_ID"}
    refused = subprocess.run(argv, cwd=root, env=no_id, capture_output=True, text=True)
    assert refused.returncode != 0 and "set RDZV_ID" in refused.stderr, refused.stderr
    logs = [tmp_path / f"node{n}.log" for n in (0, 1)]
    procs = []
    for n, log in enumerate(logs):
        with open(log, "w") as out:
            procs.append(subprocess.Popen(argv, cwd=root, env={**env, "NODE_RANK": str(n)},
                                          stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))  # fmt: skip
    deadline, codes = time.monotonic() + 240, [None, None]
    try:  # one node failing ends the test at once (its peer would wait out torchrun's barrier)
        while None in codes and time.monotonic() < deadline and not any(codes):
            codes = [p.poll() for p in procs]
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # torchrun and its workers
            p.wait(timeout=30)
    assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 4
    assert_same_updates(pair, run_dir)
