"""The 2012 two-tower AlexNet as one plain module (ref §1).

The two towers live side by side in every tensor: channels ``[0, C/2)`` are tower 0 (GPU0 in
2012), ``[C/2, C)`` tower 1. A layer whose input comes from its own tower only is a grouped
layer (``groups=2``); a layer named in ``cross`` reads both towers (``groups=1``), which is
exactly the 2012 code's one weight block per input tower, outputs summed (ref §1). The same
module runs in one process as is, or one tower per rank after :mod:`alexnet2012.parallel`
relocates it; ``state_dict()`` is the canonical layout for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from alexnet2012.config import LAYERS, PAPER_CROSS, init_for
from alexnet2012.nets.layers import CrossLRN, Overhang, SpatialNorm, TowerDropout, TowerLRN

FULL_WIDTHS = (96, 256, 384, 384, 256, 4096, 4096)  # conv1..conv5, fc6, fc7 (ref §1)


@dataclass(frozen=True)
class Preset:
    """What differs between the paper's text, the 2012 code and Caffe (ref §1.3, §5)."""

    conv1_ops: tuple  # what follows conv1, in order
    conv2_ops: tuple
    conv5_ops: tuple
    std: tuple  # init std of conv1..fc8
    bias: tuple  # bias init of conv1..fc8
    input_size: int
    overhang: bool  # cuda-convnet's ceil-sized conv1 (ref §1.1)
    lrn_k: float = 2.0  # [P] §3.3
    lrn_cross: bool = False  # Caffe's LRN runs across both towers (ref §5)


_ORIGINAL = Preset(  # the network the 2012 code trained: ref §1 table, §1.3 right column
    conv1_ops=("lrn", "pool", "relu"),
    conv2_ops=("relu", "lrn", "snorm", "pool"),
    conv5_ops=("pool", "relu"),
    std=(0.01, 0.01, 0.03, 0.03, 0.03, 0.01, 0.01, 0.01),
    bias=(0, 1, 0, 1, 1, 1, 1, 0),
    input_size=224,
    overhang=True,
)
# the paper's text: [P] §3.3-3.5, §5; ref §1.3 left column (ReLU first, no spatial norm)
_PAPER = replace(
    _ORIGINAL,
    conv1_ops=("relu", "lrn", "pool"),
    conv2_ops=("relu", "lrn", "pool"),
    conv5_ops=("relu", "pool"),
    std=(0.01,) * 8,
)
PRESETS = {
    "original": _ORIGINAL,
    "paper": _PAPER,
    # BVLC bvlc_alexnet: ref §5 (227 input, LRN after ReLU across all channels, k=1)
    "caffe": replace(
        _PAPER,
        std=(0.01, 0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.01),
        bias=(0, 0.1, 0, 0.1, 0.1, 0.1, 0.1, 0),
        input_size=227,
        overhang=False,
        lrn_k=1.0,
        lrn_cross=True,
    ),
}


def grouped_linear(x, weight, bias, groups: int):
    """``F.linear`` where output block g reads input block g only (weight is (out, in/groups))."""
    if groups == 1:
        return F.linear(x, weight, bias)
    n = x.shape[0]
    xg = x.view(n, groups, -1)  # (N, G, in/G)
    wg = weight.view(groups, -1, weight.shape[1])  # (G, out/G, in/G)
    y = torch.einsum("ngi,goi->ngo", xg, wg).reshape(n, -1)
    return y if bias is None else y + bias


class Block(nn.Module):
    """One conv or fully connected layer and the operations that follow it.

    ``groups`` is 2 where the layer reads its own tower only, 1 where it reads both towers
    (or on a rank that already holds just one tower's slice). ``cross`` records the latter.
    """

    def __init__(self, name, cin, cout, groups, cross, kernel=0, stride=1, padding=0, pre=None):
        super().__init__()
        self.name, self.groups, self.cross = name, groups, cross
        self.kernel, self.stride, self.padding = kernel, stride, padding
        shape = (cout, cin // groups, kernel, kernel) if kernel else (cout, cin // groups)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(cout))
        self.pre = pre if pre is not None else nn.Identity()
        self.post = nn.Sequential()
        self.per_tower = False  # a grouped conv as one conv per tower (train.grouped)

    def op(self, x, weight, bias, groups: int = 1):
        """The layer's convolution or product with the given weights (no pre/post ops)."""
        if self.kernel and groups > 1 and self.per_tower:  # train.grouped=per_tower
            xs, ws = x.chunk(groups, dim=1), weight.chunk(groups, dim=0)
            bs = bias.chunk(groups) if bias is not None else (None,) * groups
            convs = zip(xs, ws, bs, strict=True)
            return torch.cat([F.conv2d(*c, self.stride, self.padding) for c in convs], dim=1)
        if self.kernel:
            return F.conv2d(x, weight, bias, self.stride, self.padding, 1, groups)
        return grouped_linear(x, weight, bias, groups)

    def forward(self, x):
        return self.post(self.op(self.pre(x), self.weight, self.bias, self.groups))


def conv1_size(size: int, overhang: bool) -> tuple[int, int]:
    """(output size, right/bottom zero padding) of conv1 11/4 (ref §1.1)."""
    if overhang:
        out = 1 + math.ceil((size - 11) / 4)
        return out, (out - 1) * 4 + 11 - size
    return 1 + (size - 11) // 4, 0


def pool_size(size: int, k: int, s: int, ceil: bool = True) -> int:
    """Output size of a k/s max pooling; ``ceil`` rounds up as cuda-convnet and Caffe do."""
    return 1 + (math.ceil if ceil else math.floor)((size - k) / s)


class AlexNet2012(nn.Module):
    """The two-GPU network of Krizhevsky, Sutskever and Hinton (2012), as one module.

    Args:
        preset: ``original`` (what the 2012 code trained), ``paper`` (the paper's text) or
            ``caffe`` (BVLC bvlc_alexnet). See :data:`PRESETS`.
        widths: total widths of conv1..conv5, fc6, fc7; default the paper's.
        cross: layers that read both towers (ref §1); fc8 always does.
        half: the one-column net of the paper's ablation (ref §1.4).
        lrn, overlap_pool, dropout: the switches the paper's ablations turn.
        seed: initialisation seed (and the dropout masks' base seed).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        preset: str = "original",
        widths=None,
        input_size: int | None = None,
        cross=PAPER_CROSS,
        half: bool = False,
        lrn: bool = True,
        overlap_pool: bool = True,
        dropout: str = "paper",
        init: str = "preset",
        seed: int = 0,
    ):
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        p = self.preset = PRESETS[preset]
        widths = tuple(widths or FULL_WIDTHS)
        self.towers = 1 if half else 2
        if half:  # one column: half the kernels in conv1-conv4 ([P] footnote 2, ref §1.4)
            widths = tuple(w // 2 for w in widths[:4]) + widths[4:]
        self.widths, self.num_classes, self.in_channels = widths, num_classes, in_channels
        self.input_size = input_size or p.input_size
        self.cross = tuple(cross)
        self.overlap_pool = overlap_pool
        self.init = init_for("alexnet2012", init)  # preset or kaiming, else a ConfigError

        pk, ps = (3, 2) if overlap_pool else (2, 2)  # [P] §3.4: z=3, s=2 overlapping
        # [P] §3.4: 2/2 pooling "produces output of equivalent dimensions": round down to keep
        # 27/13/6 at 224 (rounding up, as cuda-convnet would, gives 28/14/7 and a wider fc6)
        ceil = overlap_pool
        s1, extra = conv1_size(self.input_size, p.overhang)
        s2 = pool_size(s1, pk, ps, ceil)
        s3 = pool_size(s2, pk, ps, ceil)
        s6 = pool_size(s3, pk, ps, ceil)
        if min(s1, s2, s3, s6) < 1:
            raise ValueError(f"input size {self.input_size} is too small for AlexNet's poolings")
        self.sizes = {"conv1": s1, "conv2": s2, "conv3": s3, "conv4": s3, "conv5": s3, "fc": s6}

        def crosses(name):
            return self.towers == 2 and name in self.cross

        def groups(name):
            return 1 if (self.towers == 1 or name in self.cross) else 2

        c = widths
        self.conv1 = Block("conv1", in_channels, c[0], 1, False, 11, 4, 0, Overhang(extra))
        self.conv2 = Block("conv2", c[0], c[1], groups("conv2"), crosses("conv2"), 5, 1, 2)
        self.conv3 = Block("conv3", c[1], c[2], groups("conv3"), crosses("conv3"), 3, 1, 1)
        self.conv4 = Block("conv4", c[2], c[3], groups("conv4"), crosses("conv4"), 3, 1, 1)
        self.conv5 = Block("conv5", c[3], c[4], groups("conv5"), crosses("conv5"), 3, 1, 1)
        fc_in = c[4] * s6 * s6  # flattened tower 0 then tower 1 (canonical fc6 layout)
        self.fc6 = Block("fc6", fc_in, c[5], groups("fc6"), crosses("fc6"))
        self.fc7 = Block("fc7", c[5], c[6], groups("fc7"), crosses("fc7"))
        self.fc8 = Block("fc8", c[6], num_classes, 1, crosses("fc8"))

        def ops(names):
            out = []
            for n in names:
                if n == "lrn" and lrn:
                    out.append(
                        CrossLRN(k=p.lrn_k) if p.lrn_cross else TowerLRN(self.towers, k=p.lrn_k)
                    )
                elif n == "snorm" and lrn:
                    out.append(SpatialNorm())
                elif n == "pool":
                    out.append(nn.MaxPool2d(pk, ps, ceil_mode=ceil))
                elif n == "relu":
                    out.append(nn.ReLU())
            return out

        relu = [nn.ReLU()]
        self.conv1.post = nn.Sequential(*ops(p.conv1_ops))
        self.conv2.post = nn.Sequential(*ops(p.conv2_ops))
        self.conv3.post = nn.Sequential(*relu)
        self.conv4.post = nn.Sequential(nn.ReLU())
        self.conv5.post = nn.Sequential(*ops(p.conv5_ops), nn.Flatten())
        for name, layer, width in (("fc6", 6, c[5]), ("fc7", 7, c[6])):  # width: both towers
            drop = TowerDropout(self.towers, style=dropout, layer=layer, width=width // self.towers)
            getattr(self, name).post = nn.Sequential(nn.ReLU(), drop)
        self.reset_parameters(seed)

    def blocks(self) -> list[Block]:
        return [getattr(self, name) for name in LAYERS]

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """Draw every weight from N(0, std^2) and set biases, per the preset, from one seed.

        ``init="kaiming"`` replaces the preset's fixed stds by sqrt(2 / fan_in) (He et al.,
        2015), which narrow scaled-down nets need to leave the chance-level plateau (ref §2).
        """
        g = torch.Generator().manual_seed(seed)
        for block, std, bias in zip(self.blocks(), self.preset.std, self.preset.bias, strict=True):
            if self.init == "kaiming":
                std = (2.0 / block.weight[0].numel()) ** 0.5
            block.weight.normal_(0.0, std, generator=g)
            block.bias.fill_(bias)
        for m in self.modules():
            if isinstance(m, TowerDropout):
                m.seed = seed

    def forward(self, x):  # x: (N, C, S, S) -> logits (N, classes)
        for block in self.blocks():
            x = block(x)
        return x
