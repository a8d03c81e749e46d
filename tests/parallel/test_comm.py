"""The exchanges of alexnet2012.parallel.comm on two gloo CPU ranks against one-process references.

Every pair is checked forward and backward: each rank's input gradient must equal its slice of
the gradient the one-process computation gives. One spawn runs all exchanges (spawning costs
seconds); the tests below read its results.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from spawn import run_ranks

from alexnet2012.control import torchrun
from alexnet2012.parallel import comm

TOL = 1e-6
N = 3


def inputs() -> dict[str, torch.Tensor]:
    """The full (one-process) tensors; both ranks and the reference draw the same ones."""
    g = torch.Generator().manual_seed(2012)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return {
        "x4": r(N, 6, 4, 5),  # 3 channels per tower
        "w4": r(4, 6, 1, 1),  # cross conv: rank r computes output channels [2r, 2r+2)
        "x2": r(N, 8),
        "w2": r(6, 8),  # cross linear: rank r computes outputs [3r, 3r+3)
        "xh": r(N, 8),
        "wh": r(5, 8),  # classifier on the head
        "xs": r(N, 8),
        "ws": r(5, 8),  # split classifier: rank r holds input columns [4r, 4r+4)
        "y": torch.tensor([0, 3, 4]),
    }


def weighted(y: torch.Tensor, first: int = 0) -> torch.Tensor:
    """A loss whose gradient differs per output channel; ``y`` holds channels ``first...``."""
    scale = torch.arange(first + 1, first + y.shape[1] + 1, dtype=y.dtype).view(
        1, -1, *([1] * (y.dim() - 2))
    )
    return (scale * y).pow(2).sum() / 2


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.clone().requires_grad_(True)


def exchanges(rank: int) -> dict:
    """On each rank: every pair forward and backward, with the byte counters after each step."""
    t, g = inputs(), comm.world()
    assert (g.rank, g.size) == (rank, 2)
    out: dict = {}

    x = leaf(t["x4"].chunk(2, 1)[rank])  # (N, 3, 4, 5) this tower
    full = comm.gather_towers(x, g, "g4")
    out["g4_fwd"], out["g4_fwd_bytes"] = full, g.bytes_sent["g4"]
    weighted(F.conv2d(full, t["w4"].chunk(2, 0)[rank]), first=2 * rank).backward()
    out["g4_grad"] = x.grad

    x = leaf(t["x2"].chunk(2, 1)[rank])  # (N, 4)
    full = comm.gather_towers(x, g, "g2")
    out["g2_fwd"] = full
    weighted(F.linear(full, t["w2"].chunk(2, 0)[rank]), first=3 * rank).backward()
    out["g2_grad"] = x.grad

    for head in (0, 1):
        name = f"head{head}"
        x = leaf(t["xh"].chunk(2, 1)[rank])
        y = comm.gather_to_head(x, g, name, head=head)
        out[f"{name}_fwd"], out[f"{name}_fwd_bytes"] = y, g.bytes_sent[name]
        loss = weighted(F.linear(y, t["wh"])) if rank == head else y.sum()
        loss.backward()
        out[f"{name}_grad"] = x.grad

    x, w = leaf(t["xs"].chunk(2, 1)[rank]), leaf(t["ws"].chunk(2, 1)[rank])
    logits = comm.sum_partials(F.linear(x, w), g, "sum")
    loss = F.cross_entropy(logits, t["y"])  # the same loss on both ranks
    loss.backward()
    out.update(sum_fwd=logits, sum_loss=loss, sum_gx=x.grad, sum_gw=w.grad)

    out["bytes"], out["wait"] = dict(g.bytes_sent), dict(g.wait_s)
    out["gathered_w"] = comm.all_gather_cat(t["w2"].chunk(2, 0)[rank], g, 0)
    out["bcast"] = comm.broadcast(torch.full((2,), float(rank)), g, src=1)
    out["obj"] = comm.broadcast_object({"from": rank}, g, src=0)
    out["sum"] = comm.all_reduce_sum(torch.tensor([rank + 1.0]), g)
    comm.barrier(g)
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    return run_ranks(exchanges, 2, tmp_path_factory.mktemp("comm"), timeout=90)


def reference_grad(x: torch.Tensor, fn) -> tuple[np.ndarray, np.ndarray]:
    x = leaf(x)
    y = fn(x)
    weighted(y).backward()
    return x.detach().numpy(), x.grad.numpy()


def halves(a: np.ndarray) -> list[np.ndarray]:
    return np.split(a, 2, axis=1)


@pytest.mark.parametrize("kind", ["g4", "g2"])
def test_gather_towers_matches_one_process(ranks, kind):
    t = inputs()
    x, w = (t["x4"], t["w4"]) if kind == "g4" else (t["x2"], t["w2"])
    layer = F.conv2d if kind == "g4" else F.linear
    full, grad = reference_grad(x, lambda v: layer(v, w))
    for rank, res in enumerate(ranks):
        np.testing.assert_allclose(res[f"{kind}_fwd"], full, atol=TOL)  # rank 0's channels first
        np.testing.assert_allclose(res[f"{kind}_grad"], halves(grad)[rank], atol=TOL)


@pytest.mark.parametrize("head", [0, 1])
def test_gather_to_head_then_linear(ranks, head):
    t = inputs()
    full, grad = reference_grad(t["xh"], lambda v: F.linear(v, t["wh"]))
    for rank, res in enumerate(ranks):
        expect_shape = full.shape if rank == head else (N, 0)
        assert res[f"head{head}_fwd"].shape == expect_shape
        np.testing.assert_allclose(res[f"head{head}_grad"], halves(grad)[rank], atol=TOL)
    np.testing.assert_allclose(ranks[head][f"head{head}_fwd"], full, atol=TOL)


def test_sum_partials_does_not_double_gradients(ranks):
    t = inputs()
    x, w = leaf(t["xs"]), leaf(t["ws"])
    logits = F.linear(x, w)
    loss = F.cross_entropy(logits, t["y"])
    loss.backward()
    for rank, res in enumerate(ranks):
        np.testing.assert_allclose(res["sum_fwd"], logits.detach().numpy(), atol=TOL)
        np.testing.assert_allclose(res["sum_loss"], loss.item(), atol=TOL)
        np.testing.assert_allclose(res["sum_gx"], halves(x.grad.numpy())[rank], atol=TOL)
        np.testing.assert_allclose(res["sum_gw"], halves(w.grad.numpy())[rank], atol=TOL)


def test_byte_counters_are_exact(ranks):
    f64 = 8
    shard4, shard2, shard_h, logits = N * 3 * 4 * 5, N * 4, N * 4, N * 5
    for rank, res in enumerate(ranks):
        assert res["g4_fwd_bytes"] == shard4 * f64  # all-gather: my shard to the other rank
        b = res["bytes"]
        assert b["g4"] == 2 * shard4 * f64  # + reduce-scatter backward, same volume
        assert b["g2"] == 2 * shard2 * f64
        assert b["sum"] == logits * f64  # ring all-reduce at size 2; backward is free
        for head in (0, 1):
            # forward: only the non-head sends; backward: only the head sends the other's slice
            assert res[f"head{head}_fwd_bytes"] == (0 if rank == head else shard_h * f64)
            assert b[f"head{head}"] == shard_h * f64
        assert set(res["wait"]) == set(b) and all(v >= 0 for v in res["wait"].values())


def test_plain_helpers(ranks):
    w2 = inputs()["w2"].numpy()
    for res in ranks:
        np.testing.assert_array_equal(res["gathered_w"], w2)
        np.testing.assert_array_equal(res["bcast"], [1.0, 1.0])
        assert res["obj"] == {"from": 0}
        np.testing.assert_array_equal(res["sum"], [3.0])


def test_single_group_is_identity():
    g = comm.single()
    assert not g.enabled and (g.rank, g.size) == (0, 1)
    x = leaf(torch.randn(N, 4, 2, 2, dtype=torch.float64))
    y = comm.gather_towers(x, g, "a")
    y = comm.gather_to_head(y, g, "b")
    y = comm.sum_partials(y, g, "c")
    weighted(y).backward()
    _, grad = reference_grad(x.detach(), lambda v: v)
    np.testing.assert_allclose(x.grad.numpy(), grad, atol=TOL)
    t = torch.ones(3)
    assert comm.broadcast(t, g) is t and comm.all_reduce_sum(t, g) is t
    assert comm.all_gather_cat(t, g, 0) is t and comm.broadcast_object("o", g) == "o"
    comm.barrier(g)
    assert sum(g.bytes_sent.values()) == 0 and sum(g.wait_s.values()) == 0
    g.bytes_sent["x"] = 5
    g.reset_counters()
    assert g.bytes_sent == {} and g.wait_s == {}


TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR")


def torchrun_env(monkeypatch, world_size: int) -> None:
    values = ("0", "0", str(world_size), str(world_size), "127.0.0.1")
    for k, v in zip(TORCHRUN_VARS, values, strict=True):
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MASTER_PORT", "29555")


@pytest.mark.parametrize("world_size", [3, 5])
def test_setup_rejects_odd_world_size(monkeypatch, world_size):
    torchrun_env(monkeypatch, world_size)
    with pytest.raises(torchrun.DistributedError) as err:
        torchrun.setup(5, "cpu")
    msg = str(err.value)
    assert "2 ranks per tower pair" in msg and f"WORLD_SIZE={world_size}" in msg
    assert "torchrun --standalone --nproc_per_node=2 -m alexnet2012 train" in msg
    assert isinstance(err.value, ValueError) and not dist.is_initialized()


def test_setup_without_torchrun_is_one_process(monkeypatch):
    for k in (*TORCHRUN_VARS, "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    threads = torch.get_num_threads()
    with torchrun.session(5, "cpu") as env:
        assert (env.rank, env.world_size, env.backend, env.is_main) == (0, 1, "none", True)
        assert env.device == torch.device("cpu") and env.group.size == 1
        assert not dist.is_initialized() and torch.get_num_threads() == threads
    torchrun.teardown()  # safe twice
    with pytest.raises(torchrun.DistributedError, match="choose from"):
        torchrun.setup(5, "tpu")


def test_restartable_job(monkeypatch):
    """The run id that ties a torchrun job's attempts together; none outside --max-restarts, and
    none for torchrun's default id "none", which every job without --rdzv-id shares."""
    for k in ("TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(k, raising=False)
    assert torchrun.restartable_job() == ""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "3f2a9b")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "0")
    assert torchrun.restartable_job() == ""
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "2")
    assert torchrun.restartable_job() == "3f2a9b"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert torchrun.restartable_job() == ""


def fail_on_rank1(rank: int) -> None:
    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    comm.barrier(comm.world())  # rank 0 would wait here for its peer


def test_failing_rank_fails_fast_with_its_traceback(tmp_path):
    start = time.monotonic()
    with pytest.raises(AssertionError, match="rank 1 fails on purpose") as err:
        run_ranks(fail_on_rank1, 2, tmp_path, timeout=60)
    assert "fail_on_rank1" in str(err.value)  # the traceback, not just the message
    assert time.monotonic() - start < 30
