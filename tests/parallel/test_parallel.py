"""Two CPU ranks, one tower each, against the one-process network (docs/parallel.md)."""

import numpy as np
import pytest
import torch
from spawn import run_ranks

from alexnet2012.nets.model import AlexNet2012
from alexnet2012.parallel import comm
from alexnet2012.parallel.execution import Execution, PlanError, placement

CROSS_LISTS = [
    ["conv3", "fc6", "fc7", "fc8"],  # the paper's
    ["fc6", "fc7", "fc8"],  # no conv3 exchange
    ["conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"],  # every layer exchanges
    ["conv4", "fc7", "fc8"],
]


def tiny(cross, seed=0, **kw):
    return AlexNet2012(
        num_classes=10, widths=(8, 16, 24, 24, 16, 32, 32), input_size=67, cross=cross,
        dropout="none", seed=seed, **kw,
    )  # fmt: skip


def batch(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 67, 67, generator=g), torch.randint(0, 10, (n,), generator=g)


def reference(cross):
    """Logits, loss and every parameter gradient of the unsharded network."""
    m = tiny(cross)
    x, y = batch()
    out = m(x)
    loss = torch.nn.functional.cross_entropy(out, y)
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in m.named_parameters()}
    return out.detach().numpy(), loss.item(), grads


def _forward_backward(rank, cases):
    results = []
    for cross, fc8, overlap in cases:
        ex = Execution(tiny(cross), comm.world(), fc8, overlap)
        x, y = batch()
        out = ex.forward(x)
        loss = ex.loss(out, y)
        loss.backward()
        grads = {}
        for name in ex.full_shapes:  # gather each gradient into the canonical layout
            p = dict(ex.model.named_parameters()).get(name)
            grads[name] = ex.gather(name, None if p is None else p.grad)
        results.append({
            "logits": out.detach() if ex.holds_logits else None,
            "loss": loss.item() if ex.holds_logits else None,
            "grads": grads,
            "params": sum(p.numel() for p in ex.model.parameters()),
            "bytes": dict(ex.group.bytes_sent),
        })  # fmt: skip
    return results


def test_two_ranks_equal_one_process(tmp_path):
    cases = [(c, fc8, False) for c in CROSS_LISTS for fc8 in ("rank0", "split")]
    cases += [(c, "rank0", True) for c in CROSS_LISTS]  # exchanges overlapped with compute
    per_rank = run_ranks(_forward_backward, 2, tmp_path, args=(cases,))
    for i, (cross, fc8, overlap) in enumerate(cases):
        logits, loss, grads = reference(cross)
        for rank in (0, 1):
            got = per_rank[rank][i]
            if rank == 0 or fc8 == "split":
                np.testing.assert_allclose(got["logits"], logits, rtol=1e-5, atol=1e-6)
                assert abs(got["loss"] - loss) <= 1e-5 * abs(loss)
            else:
                assert got["logits"] is None  # fc8 lives on rank 0 only, as in [C12]
            for name, g in grads.items():
                np.testing.assert_allclose(
                    got["grads"][name],
                    g,
                    rtol=1e-5,
                    atol=1e-7,
                    err_msg=f"{cross} {fc8} {overlap} {name}",
                )
        # each rank holds about half; rank 0 carries fc8 when it is not split
        total = sum(v.size for v in grads.values())
        p0, p1 = per_rank[0][i]["params"], per_rank[1][i]["params"]
        assert p0 + p1 == total
        if fc8 == "rank0":
            fc8_params = grads["fc8.weight"].size + grads["fc8.bias"].size
            assert p0 - p1 == fc8_params


def _exchange_bytes(rank, overlap):
    ex = Execution(tiny(["conv3", "fc6", "fc7", "fc8"]), comm.world(), "rank0", overlap)
    x, y = batch(n=8)
    ex.loss(ex.forward(x), y).backward()
    return dict(ex.group.bytes_sent)


@pytest.mark.parametrize("overlap", [False, True])
def test_bytes_exchanged_are_the_minimum(tmp_path, overlap):
    """Each rank sends its half once forward and its peer's gradient half once backward."""
    b0, b1 = run_ranks(_exchange_bytes, 2, tmp_path, args=(overlap,))
    n, f = 8, 4  # batch, fp32 bytes
    s3, s6 = (
        tiny(["fc8"]).sizes["conv3"],
        tiny(["fc8"]).sizes["fc"],
    )  # 3x3 before conv3, 1x1 before fc6
    half = {"conv3": n * 8 * s3 * s3, "fc6": n * 8 * s6 * s6, "fc7": n * 16}  # one tower's part
    for name, elems in half.items():
        assert b0[name] == b1[name] == 2 * elems * f, name  # forward + backward
    assert b1["fc8"] == n * 16 * f  # rank 1 sends its fc7 output once
    assert b0["fc8"] == n * 16 * f  # rank 0 sends rank 1's gradient slice back


def test_placement_table():
    assert placement("conv3.weight", "rank0") == ("dim", 0)
    assert placement("fc8.weight", "rank0") == ("head",)
    assert placement("fc8.weight", "split") == ("dim", 1)
    assert placement("fc8.bias", "split") == ("head",)


def test_plans_refused_clearly():
    two = comm.TowerGroup(None, 0, 2)
    with pytest.raises(PlanError, match="one process"):
        Execution(tiny(["fc8"], half=True), two)
    with pytest.raises(PlanError, match="tower boundary"):
        Execution(
            AlexNet2012(num_classes=10, widths=(8, 16, 24, 24, 16, 32, 32), preset="caffe"), two
        )
    with pytest.raises(PlanError, match="exactly 2"):
        Execution(tiny(["fc8"]), comm.TowerGroup(None, 0, 4))
