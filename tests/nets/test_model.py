"""The two-tower network against the facts of ref §1 and the baselines of ref §5."""

from pathlib import Path

import pytest
import torch

from alexnet2012 import AlexNet2012
from alexnet2012.nets import baselines
from alexnet2012.nets.layers import SpatialNorm, TowerLRN
from alexnet2012.nets.summary import layer_table


def count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("preset", ["original", "paper", "caffe"])
def test_full_size_counts_and_shapes(preset):
    m = AlexNet2012(preset=preset)
    assert count(m) == 60_965_224  # ref §1
    rows = layer_table(m, 3, m.input_size)
    shapes = [r["shape"] for r in rows]
    assert shapes[:5] == [(96, 55, 55), (256, 27, 27), (384, 13, 13), (384, 13, 13), (256, 13, 13)]
    assert m.sizes["fc"] == 6 and shapes[5:] == [(4096,), (4096,), (1000,)]
    per_layer = [r["params"] for r in rows]
    assert per_layer == [
        34_944,
        307_456,
        885_120,
        663_936,
        442_624,
        37_752_832,
        16_781_312,
        4_097_000,
    ]
    assert sum(r["macs"] for r in rows) == 724_406_816  # docs/parallel.md: 724.4 M


def test_canonical_layout():
    sd = AlexNet2012().state_dict()
    assert list(sd) == [
        f"{n}.{k}"
        for n in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
        for k in ("weight", "bias")
    ]
    assert sd["conv2.weight"].shape == (256, 48, 5, 5)
    assert sd["conv3.weight"].shape == (384, 256, 3, 3)
    assert sd["conv4.weight"].shape == (384, 192, 3, 3)
    assert sd["conv5.weight"].shape == (256, 192, 3, 3)
    assert sd["fc6.weight"].shape == (4096, 9216)


def test_half_net_and_ungrouped_counts():
    assert count(AlexNet2012(half=True)) == 59_798_312  # ref §1.4
    every = ["conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert count(AlexNet2012(cross=every)) == 62_378_344  # same widths without grouping


def test_baselines():
    d2l = baselines.streamlined()
    assert count(d2l) == 46_764_746
    rows = layer_table(d2l, 1, 224)
    assert rows[0]["shape"] == (96, 54, 54) and rows[5]["params"] == 6400 * 4096 + 4096
    assert d2l(torch.zeros(2, 1, 224, 224)).shape == (2, 10)
    assert count(baselines.torchvision_alexnet()) == 61_100_840


@pytest.mark.parametrize("preset", ["original", "paper", "caffe"])
def test_no_buffers(preset):
    """Data parallelism leaves buffers to DDP's default sync (parallel.replicate): keep none."""
    nets = [AlexNet2012(preset=preset), baselines.streamlined(), baselines.torchvision_alexnet()]
    assert all(not list(n.buffers()) for n in nets)


def test_overhang_equals_ceil_sized_conv():
    """224 with 3 px of zeros right and bottom gives 55x55 (ref §1.1)."""
    m = AlexNet2012(widths=(8, 16, 16, 16, 16, 32, 32), num_classes=4)
    x = torch.randn(1, 3, 224, 224)
    out = m.conv1.pre(x)
    assert (
        out.shape[-1] == 227
        and out[..., 224:].abs().sum() == 0
        and out[..., 224:, :].abs().sum() == 0
    )


def lrn_reference(a, n=5, alpha=1e-4, beta=0.75, k=2.0):
    """[C12]: b_i = a_i / (k + alpha/n * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta, clipped at the edges."""
    c = a.shape[1]
    out = torch.empty_like(a)
    for i in range(c):
        lo, hi = max(0, i - n // 2), min(c - 1, i + n // 2)
        s = (a[:, lo : hi + 1] ** 2).sum(1)
        out[:, i] = a[:, i] / (k + alpha / n * s) ** beta
    return out


def test_lrn_matches_formula_per_tower():
    torch.manual_seed(0)
    a = torch.randn(2, 12, 4, 4) * 30
    got = TowerLRN(towers=2)(a)
    want = torch.cat([lrn_reference(a[:, :6]), lrn_reference(a[:, 6:])], 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # the towers never mix: changing tower 1 leaves tower 0's normalised maps unchanged
    b = a.clone()
    b[:, 6:] *= 5
    torch.testing.assert_close(TowerLRN(towers=2)(b)[:, :6], got[:, :6])
    # and crossing the boundary would have given something else
    assert not torch.allclose(lrn_reference(a)[:, 5], got[:, 5])


def test_spatial_norm_formula():
    a = torch.randn(1, 2, 6, 6) * 10
    got = SpatialNorm()(a)
    pad = torch.nn.functional.pad(a * a, (2, 2, 2, 2))
    want = torch.empty_like(a)
    for i in range(6):
        for j in range(6):
            mean = pad[:, :, i : i + 5, j : j + 5].sum((-1, -2)) / 25
            want[:, :, i, j] = a[:, :, i, j] / (1 + 0.001 * mean) ** 0.75
    torch.testing.assert_close(got, want)


def small(**kw):
    return AlexNet2012(num_classes=10, widths=(8, 16, 24, 24, 16, 32, 32), input_size=67, **kw)


def test_grouped_layers_are_block_diagonal_and_cross_layers_mix():
    m = small(dropout="none").eval()
    x = torch.randn(2, 16, 7, 7)
    y = m.conv4(torch.randn(2, 24, 3, 3))
    assert y.shape[1] == 24
    base = m.conv2(torch.randn(2, 8, 7, 7))
    inp = torch.randn(2, 8, 7, 7)
    out = m.conv2(inp)
    inp2 = inp.clone()
    inp2[:, 4:] += 1.0  # perturb tower 1's input to conv2
    out2 = m.conv2(inp2)
    half = out.shape[1] // 2
    torch.testing.assert_close(out2[:, :half], out[:, :half])  # tower 0 unaffected
    assert not torch.allclose(out2[:, half:], out[:, half:])
    assert base.shape == out.shape
    # conv3 reads both towers: perturbing tower 1's input moves tower 0's output
    x2 = x.clone()
    x2[:, 8:] += 1.0
    a, b = m.conv3(x), m.conv3(x2)
    assert not torch.allclose(a[:, :12], b[:, :12])


@pytest.mark.parametrize("preset, stds", [
    ("original", (0.01, 0.01, 0.03, 0.03, 0.03, 0.01, 0.01, 0.01)),
    ("paper", (0.01,) * 8),
    ("caffe", (0.01, 0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.01)),
])  # fmt: skip
def test_init_statistics(preset, stds):
    m = AlexNet2012(preset=preset, seed=3)
    biases = {"original": (0, 1, 0, 1, 1, 1, 1, 0), "paper": (0, 1, 0, 1, 1, 1, 1, 0),
              "caffe": (0, 0.1, 0, 0.1, 0.1, 0.1, 0.1, 0)}[preset]  # fmt: skip
    for block, std, bias in zip(m.blocks(), stds, biases, strict=True):
        w = block.weight
        assert abs(w.std().item() - std) < 0.05 * std, block.name
        assert abs(w.mean().item()) < 0.05 * std
        assert torch.all(block.bias == bias)


def test_init_is_deterministic():
    a, b, c = small(seed=1), small(seed=1), small(seed=2)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_paper_dropout_scales_at_test():
    m = small()
    m.train()
    x = torch.ones(4, 32)
    drop = m.fc6.post[1]
    y = drop(x)
    assert set(y.unique().tolist()) <= {0.0, 1.0}  # masked, not rescaled
    m.eval()
    assert torch.equal(drop(x), x * 0.5)


def test_options_change_the_network():
    """Each switch changes what the network computes, not only its name."""
    x = torch.randn(2, 3, 67, 67, generator=torch.Generator().manual_seed(3)) * 100
    base = small(dropout="none").eval()

    def conv2_out(net):  # the logits of a net this narrow barely depend on the image (ref §2)
        with torch.no_grad():
            return net.conv2(net.conv1(x))

    want = conv2_out(base)

    def same_weights(**kw):  # the switch alone differs: the base net's weights loaded
        net = small(dropout="none", **kw).eval()
        net.load_state_dict(base.state_dict())
        return net

    def kinds(net):
        return [type(m).__name__ for m in net.modules()]

    no_lrn = same_weights(lrn=False)
    assert "TowerLRN" in kinds(base) and "SpatialNorm" in kinds(base)
    assert "TowerLRN" not in kinds(no_lrn) and "SpatialNorm" not in kinds(no_lrn)
    assert (conv2_out(no_lrn) - want).abs().max() > 1e-3 * want.abs().max()  # float noise: ~1e-7
    paper = same_weights(preset="paper")  # LRN after ReLU, no spatial norm (ref §1.3)
    order = [type(m).__name__ for m in paper.conv1.post]
    assert order == ["ReLU", "TowerLRN", "MaxPool2d"], order
    assert [type(m).__name__ for m in base.conv1.post] == ["TowerLRN", "MaxPool2d", "ReLU"]
    assert "SpatialNorm" not in kinds(paper)
    assert (conv2_out(paper) - want).abs().max() > 1e-3 * want.abs().max()  # float noise: ~1e-7
    assert small(preset="paper").conv3.weight.std() < 0.5 * small().conv3.weight.std()  # 0.01
    pools = {
        m.kernel_size for m in small(overlap_pool=False).modules() if "Pool" in type(m).__name__
    }
    assert pools == {2} and {
        m.kernel_size for m in base.modules() if "Pool" in type(m).__name__
    } == {3}
    half = small(half=True)
    assert half.towers == 1 and half.conv1.weight.shape[0] == 4 and half.conv2.groups == 1
    assert half(x).shape == (2, 10)
    with pytest.raises(ValueError, match="preset"):
        AlexNet2012(preset="vgg")


def test_lrn_equals_torch():
    """Caffe's LRN (one window over all maps) is torch's local_response_norm, with gradients."""
    from alexnet2012.nets.layers import CrossLRN

    a = (torch.randn(3, 7, 5, 5, dtype=torch.float64) * 20).requires_grad_()
    b = a.detach().clone().requires_grad_()
    got, want = CrossLRN(k=2.0)(a), torch.nn.functional.local_response_norm(b, 5, 1e-4, 0.75, 2.0)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(want)
    got.backward(g), want.backward(g)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_grouped_layers_per_tower_equal_one_grouped_convolution():
    """train.grouped=per_tower runs conv2, conv4 and conv5 as one convolution per tower: the
    same logits and every gradient as the grouped convolution (float64), in both layouts."""
    from alexnet2012.config import load_config
    from alexnet2012.nets.build import build_model

    debug = Path(__file__).resolve().parents[2] / "configs" / "debug.yaml"
    x = torch.randn(3, 1, 95, 95, dtype=torch.float64)
    y = torch.tensor([0, 3, 7])
    out = {}
    for grouped in ("native", "per_tower"):
        cfg = load_config(str(debug), [f"train.grouped={grouped}", "model.dropout=none"])
        net = build_model(cfg, 10, 1).double()
        assert [b.per_tower for b in net.blocks()] == [grouped == "per_tower"] * 8
        for channels_last in (False, True):
            inp = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            net.zero_grad()
            logits = net(inp)
            torch.nn.functional.cross_entropy(logits, y).backward()
            grads = {k: p.grad.clone() for k, p in net.named_parameters()}
            out[grouped, channels_last] = (logits.detach(), grads)
    for key, (logits, grads) in out.items():
        ref_logits, ref_grads = out["native", False]
        torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-12)
        for k, g in grads.items():
            torch.testing.assert_close(g, ref_grads[k], rtol=1e-9, atol=1e-12, msg=f"{key} {k}")
