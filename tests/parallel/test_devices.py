"""``train.device=cuda`` needs a GPU for every local rank: fewer is an error naming the counts
(exit 2, before anything starts), not a silent fall back to gloo on the CPU."""

import pytest
import torch
import torch.distributed as dist

from alexnet2012 import cli
from alexnet2012.control import torchrun


@pytest.fixture
def two_local_ranks_one_gpu(monkeypatch):
    """torchrun's environment for rank 0 of 2 on this node, and a machine with one GPU."""
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555",
           "CUDA_VISIBLE_DEVICES": "0"}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_setup_names_ranks_and_gpus(two_local_ranks_one_gpu):
    with pytest.raises(torchrun.DistributedError) as err:
        torchrun.setup(5, "cuda")
    msg = str(err.value)
    assert "train.device=cuda" in msg and "runs 2 ranks" in msg and "sees 1 GPU(s)" in msg
    assert "CUDA_VISIBLE_DEVICES=0" in msg and "--nproc_per_node=1" in msg
    assert "train.device=auto" in msg and not dist.is_initialized()


def test_train_exits_2_before_anything_starts(two_local_ranks_one_gpu, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", "--config", "configs/debug.yaml", "train.device=cuda",
            "data.name=synthetic", f"run.dir={run_dir}"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a GPU for every local rank" in err[0], err
    assert not run_dir.exists() and not dist.is_initialized()
