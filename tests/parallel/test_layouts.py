"""Two gloo ranks in the layouts a GPU run uses: channels_last at a per-rank batch of 1, and bf16
autocast, against the one-process network; every tensor a collective gets is contiguous.

At batch 1 a reshape of a channels_last gradient is a view in channel-major order, which NCCL
refuses (or would read in memory order); the exchanges hand collectives contiguous copies.
Under bf16 autocast the norms return bf16 (nets/layers.py), so every exchange moves 2 bytes per
value: conv3's input is N x C2/2 x 13 x 13 x 2 bytes each way at full size (docs/parallel.md).
"""

import numpy as np
import pytest
import torch
import torch.distributed as dist
from spawn import run_ranks

from alexnet2012.nets.model import AlexNet2012
from alexnet2012.parallel import comm
from alexnet2012.parallel.comm import exchanges
from alexnet2012.parallel.execution import Execution

CASES = [("rank0", False), ("split", False), ("rank0", True)]  # fc8, overlap
WIDTHS = (8, 16, 24, 24, 16, 32, 32)


def tiny(seed=0):
    return AlexNet2012(num_classes=10, widths=WIDTHS, input_size=67, dropout="none", seed=seed)


def batch(n):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, 67, 67, generator=g) * 50, torch.randint(0, 10, (n,), generator=g)


def _spy_on_collectives(seen: list) -> None:
    """Record, for every tensor handed to a collective or a send/receive, whether it is
    contiguous (the exchanges' collectives, the plain helpers, the swap's batched p2p; the
    head's isend/irecv loop is not wrapped, its tensors are those the forward made contiguous)."""

    def check(*tensors):
        seen.extend(bool(t.is_contiguous()) for t in tensors)

    def wrap(fn, pick):
        def spy(*args, **kwargs):
            check(*pick(args))
            return fn(*args, **kwargs)

        return spy

    exchanges._all_gather_single = wrap(exchanges._all_gather_single, lambda a: a[:2])
    exchanges._reduce_scatter_single = wrap(exchanges._reduce_scatter_single, lambda a: a[:2])
    for name in ("send", "recv", "all_reduce", "broadcast"):  # (P2POp wants isend/irecv as is)
        setattr(dist, name, wrap(getattr(dist, name), lambda a: a[:1]))
    dist.batch_isend_irecv = wrap(dist.batch_isend_irecv, lambda a: [op.tensor for op in a[0]])


def _layouts(rank: int) -> dict:
    seen: list = []
    _spy_on_collectives(seen)
    out = {}
    for fc8, overlap in CASES:  # channels_last, one image per rank
        ex = Execution(tiny(), comm.world(), fc8, overlap)
        ex.model.to(memory_format=torch.channels_last)
        x, y = batch(1)
        logits = ex.forward(x.contiguous(memory_format=torch.channels_last))
        ex.loss(logits, y).backward()
        params = dict(ex.model.named_parameters())  # fc8 may live on rank 0 only
        grads = {k: ex.gather(k, params[k].grad if k in params else None) for k in ex.full_shapes}
        out[fc8, overlap] = {"logits": logits.detach() if ex.holds_logits else None,
                             "grads": grads}  # fmt: skip
    ex = Execution(tiny(), comm.world(), "rank0")  # bf16 autocast, batch 4
    x, y = batch(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = ex.forward(x)
        loss = ex.loss(logits, y)
    loss.backward()
    out["bf16"] = {"bytes": dict(ex.group.bytes_sent), "dtype": str(logits.dtype),
                   "logits": logits.detach().float() if ex.holds_logits else None}  # fmt: skip
    out["contiguous"] = seen
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return run_ranks(_layouts, 2, tmp_path_factory.mktemp("layouts"), timeout=120)


def _reference(n: int, channels_last: bool, amp: bool = False):
    m = tiny()
    x, y = batch(n)
    if channels_last:
        m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = m(x)
    torch.nn.functional.cross_entropy(out.float(), y).backward()
    return out.detach().float().numpy(), {k: p.grad.numpy() for k, p in m.named_parameters()}


def test_every_collective_gets_a_contiguous_tensor(ranks):
    for res in ranks:
        assert len(res["contiguous"]) > 20 and all(res["contiguous"]), res["contiguous"]


@pytest.mark.parametrize("case", CASES)
def test_channels_last_batch_one_equals_one_process(ranks, case):
    logits, grads = _reference(1, channels_last=True)
    for rank, res in enumerate(ranks):
        got = res[case]
        if got["logits"] is not None:
            np.testing.assert_allclose(got["logits"], logits, rtol=1e-4, atol=1e-5)
        for name, g in grads.items():
            scale = np.abs(g).max() + 1e-12
            np.testing.assert_allclose(got["grads"][name] / scale, g / scale, atol=1e-5,
                                       err_msg=f"rank {rank} {case} {name}")  # fmt: skip


def test_bf16_exchanges_move_two_bytes_per_value(ranks):
    m = tiny()
    n, c, s3, s6 = 4, WIDTHS, m.sizes["conv3"], m.sizes["fc"]
    tower_in = {"conv3": c[1] // 2 * s3 * s3, "fc6": c[4] // 2 * s6 * s6, "fc7": c[5] // 2}
    want = {k: 2 * n * v * 2 for k, v in tower_in.items()}  # forward + backward, 2 bytes each
    want["fc8"] = n * c[6] // 2 * 2  # fc7's output to rank 0, its gradient back
    logits, _ = _reference(4, channels_last=False, amp=True)
    for res in ranks:
        assert res["bf16"]["bytes"] == want, res["bf16"]["bytes"]
    assert ranks[0]["bf16"]["dtype"] == "torch.bfloat16"
    # the same bf16 arithmetic as one process, up to the order of bf16 sums
    err = np.abs(ranks[0]["bf16"]["logits"] - logits).max() / np.abs(logits).max()
    assert err < 2e-2, err
