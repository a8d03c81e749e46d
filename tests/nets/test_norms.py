"""The response norms under bf16 autocast: computed in fp32, returned in bf16 (nets/layers.py).

Under autocast a conv's output is bf16. Computed in bf16, LRN's ``2 + alpha/n * sum`` drops any
sum term below 0.008 and moves its denominators in steps of 0.4-0.8%; computed in fp32 and
rounded once at the end, the result is the fp32 norm of the same input, rounded to bf16: exactly
what these tests demand. The result is bf16, so the exchange after the norm (conv3's input, two
ranks: tests/parallel/test_layouts.py) moves half the bytes of fp32. Without autocast nothing
changes: fp32 stays fp32 and float64 float64.
"""

import pytest
import torch
import torch.nn.functional as F

from alexnet2012 import AlexNet2012
from alexnet2012.nets.layers import CrossLRN, SpatialNorm, TowerLRN

BF16 = torch.bfloat16
NORMS = {"tower_lrn": TowerLRN(towers=2), "cross_lrn": CrossLRN(), "spatial": SpatialNorm()}


def conv_like(seed: int = 0) -> torch.Tensor:
    """bf16 activations of the size a conv1 of 0-255 pixels gives (|a| up to a few hundred):
    the window sums are then comparable to k, where bf16 loses the most."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(4, 12, 9, 9, generator=g) * 80).to(BF16)


@pytest.mark.parametrize("name", list(NORMS))
def test_norm_under_bf16_autocast_is_fp32_rounded_once(name):
    norm, x = NORMS[name], conv_like()
    want = norm(x.float())  # no autocast: the fp32 norm of the same bf16 values
    with torch.autocast("cpu", dtype=BF16):
        got = norm(x)
    assert got.dtype == BF16
    assert torch.equal(got, want.to(BF16))  # fp32 inside, one rounding at the end


def _lrn_in_bf16(x: torch.Tensor) -> torch.Tensor:
    """LRN (one tower, k=2) as autocast used to compute it: squares, sums and k + alpha * sum
    in bf16 (the formula of nets/layers.py's lrn)."""
    c = x.shape[1]
    sq = F.pad(x * x, (0, 0, 0, 0, 2, 2))
    window = sum(sq[:, i : i + c] for i in range(5))
    return x / (2.0 + 1e-4 / 5 * window).pow(0.75)


def test_bf16_arithmetic_inside_lost_the_denominators():
    """The reason for fp32: in bf16, ``2 + s`` rounds away s < 2^-7 and moves in steps of
    2^-6, so the norm was off by several bf16 roundings; now by at most one (2^-8)."""
    x = conv_like(2)
    want = TowerLRN(towers=1)(x.float())
    with torch.autocast("cpu", dtype=BF16):
        now = TowerLRN(towers=1)(x)
    before = _lrn_in_bf16(x)

    def err(t):
        return ((t.float() - want) / want.abs().clamp_min(1e-3)).abs().max().item()

    assert err(now) <= 2**-8 < 2 * 2**-8 < err(before), (err(now), err(before))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_without_autocast_the_dtype_is_kept(dtype):
    x = conv_like().to(dtype)
    for norm in NORMS.values():
        assert norm(x).dtype == dtype


def test_network_under_autocast_hands_bf16_to_conv3():
    """Every norm's output, and so conv3's input (what two ranks exchange), is bf16."""
    m = AlexNet2012(num_classes=10, widths=(8, 16, 24, 24, 16, 32, 32), input_size=67)
    seen = {}
    for name, mod in m.named_modules():
        if isinstance(mod, (TowerLRN, SpatialNorm)):
            mod.register_forward_hook(lambda _m, _i, out, name=name: seen.update({name: out.dtype}))
    m.conv3.register_forward_pre_hook(lambda _m, args: seen.update(conv3_input=args[0].dtype))
    x = torch.randn(2, 3, 67, 67) * 50
    with torch.autocast("cpu", dtype=BF16):
        out = m(x)
    assert len(seen) == 4 and set(seen.values()) == {BF16}, seen  # LRN1, LRN2, snorm, conv3 in
    ref = m(x)
    assert ((out.float() - ref).norm() / ref.norm()).item() < 0.05


def test_norms_compile_without_a_graph_break():
    """fp32 inside autocast traces as one graph (``fullgraph``) and gives the eager result."""
    norm = torch.nn.Sequential(TowerLRN(towers=2), SpatialNorm())
    compiled = torch.compile(norm, fullgraph=True, backend="eager")
    x = conv_like(1)
    with torch.autocast("cpu", dtype=BF16):
        assert torch.equal(compiled(x), norm(x))
