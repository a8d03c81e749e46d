"""Slow but healthy waits outlast ``parallel.timeout_s``; a stalled rank ends the run with the
project's message (alexnet2012/control/watchdog.py), on two gloo ranks.

- A checkpoint that takes longer to write than ``parallel.timeout_s`` (rank 0 writes, the other
  ranks wait for it): the run finishes, because the wait is a barrier under the patient
  timeout; the same save without the patient timeout ends the run with PeerError.
- A stall under NCCL raises nothing; the stall watchdog ends every rank with PeerError's message
  within the timeout. Gloo stands in for NCCL: its groups get NCCL's longer backstop timeout, so
  only the watchdog can end the wait.
"""

import re
import time

import pytest
import torch
from spawn import run_ranks

from alexnet2012.config import load_config
from alexnet2012.control import hooks, torchrun, watchdog
from alexnet2012.parallel import comm
from alexnet2012.training import loop

SLOW_SAVE_S = 4  # twice parallel.timeout_s
OVER = ["data.name=synthetic", "data.synthetic_size=128", "train.batch_size=16",
        "train.max_steps=6", "train.log_every=1", "wandb.mode=disabled", "data.test_subset=0",
        "parallel.timeout_s=2"]  # fmt: skip


class SlowSave(hooks.Hooks):
    """Rank 0's checkpoint writes take SLOW_SAVE_S (a slow network filesystem)."""

    def in_save(self, step, stage):
        if stage == "payload":
            time.sleep(SLOW_SAVE_S)


class Stall(hooks.Hooks):
    """Rank 1 stops after step 3, as a rank whose GPU or peer hangs."""

    def after_step(self, step, rank):
        while step == 3 and rank == 1:
            time.sleep(1)


def _env(rank: int, timeout_s: float):
    env = torchrun.mesh_env(rank, 2, rank, torch.device("cpu"), "gloo")
    comm.set_timeout([env.world], timeout_s)  # as setup() makes it
    return env


def _slow_save(rank: int, run_dir: str, patient: bool):
    hooks.install(SlowSave())
    # not patient: the patient sections keep parallel.timeout_s (slow_timeout_s is below it)
    slow = [] if patient else ["parallel.slow_timeout_s=1"]
    cfg = load_config("configs/debug.yaml", [*OVER, f"run.dir={run_dir}",
                                              "train.checkpoint_every=3", *slow])  # fmt: skip
    try:
        return loop.run(cfg, env=_env(rank, 2))["steps"]
    except torchrun.PeerError as e:  # the group is broken: a new one for spawn.py's goodbye
        torchrun.teardown()
        torchrun.init_for_test(rank, 2, f"{run_dir}-store")
        return str(e)


def test_slow_save_does_not_read_as_a_dead_peer(tmp_path):
    start = time.monotonic()
    assert run_ranks(_slow_save, 2, tmp_path, args=(str(tmp_path / "a"), True)) == [6, 6]
    assert time.monotonic() - start > 2 * SLOW_SAVE_S  # it did wait: saves at steps 3 and 6
    out = run_ranks(_slow_save, 2, tmp_path, args=(str(tmp_path / "b"), False))
    assert all("died or stopped answering" in m for m in out), out  # what it was before


def _stall(rank: int, run_dir: str):
    hooks.install(Stall())
    watchdog._backend = lambda: "nccl"  # the groups' timeouts as NCCL's: twice timeout_s
    # rank 0 (waiting for the stalled rank) is watched over 3 s, the stalled rank 1 over 6 s:
    # on gloo the first rank to exit closes its connections and the other's wait raises
    # (PeerError), which NCCL's would not; so the order is fixed and each watchdog must act
    timeout_s = 3 * (rank + 1)
    cfg = load_config("configs/debug.yaml", [*OVER, f"run.dir={run_dir}",
                                              f"parallel.timeout_s={timeout_s}"])  # fmt: skip
    env = _env(rank, watchdog.group_timeout(timeout_s, "nccl"))
    env.watch_stalls = True  # setup() sets it under NCCL
    loop.run(cfg, env=env)


def test_a_stall_ends_every_rank_with_the_project_message(tmp_path, capfd):
    start = time.monotonic()
    with pytest.raises(AssertionError, match="exit code 1"):
        run_ranks(_stall, 2, tmp_path, args=(str(tmp_path / "r"),), timeout=60)
    took = time.monotonic() - start
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if "no step finished for" in ln]
    assert len(lines) == 2, err[-3000:]  # one line from each rank
    for rank, timeout_s in ((0, 3), (1, 6)):
        line = next(ln for ln in lines if f"rank {rank}: no step finished" in ln)
        idle = int(re.search(r"finished for (\d+) s", line).group(1))
        assert timeout_s <= idle < timeout_s + 10, line  # when its timeout ran out
        want = (
            r"no step finished for \d+ s: this or the other rank died or stopped "
            r"answering \(under NCCL a wait for a lost peer raises no error; "
            rf"parallel.timeout_s={timeout_s}\). The checkpoints in .* are kept; "
            r"continue with `torchrun .* train --resume "
        )
        assert re.search(want, line), line
    assert took < 40, took  # right after each rank's timeout, not at gloo's 30 s
