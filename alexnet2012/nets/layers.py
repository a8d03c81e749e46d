"""The parameter-free operations that follow each AlexNet2012 layer, aware of the towers.

A tensor here holds ``towers`` towers side by side along the channel axis (2 in one process,
1 on a rank that holds a single tower); ``tower`` is the index of the first one. Nothing here
ever mixes two towers' channels except :class:`CrossLRN` (the Caffe preset).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alexnet2012.nets.norms import CHANNEL, SPATIAL, response_norm


class TowerOp(nn.Module):
    """Base: knows how many towers its input holds and which tower comes first."""

    def __init__(self, towers: int = 2):
        super().__init__()
        self.towers = towers
        self.tower = 0


class TowerLRN(TowerOp):
    """Local response norm over each tower's own maps (ref §1.2).

    ``a_i / (k + alpha/n * sum_{|j-i|<=n/2} a_j^2)^beta``: torch divides alpha by ``size`` as the
    2012 code does, so alpha=1e-4 here is the trained network's normalisation. The window stops
    at each tower's edges; one fused operation for all towers (:mod:`.norms`), in fp32 inside.
    """

    def __init__(self, towers=2, size=5, alpha=1e-4, beta=0.75, k=2.0):
        super().__init__(towers)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):  # (N, towers * C, H, W): each tower's window clipped at its edges
        return response_norm(x, CHANNEL, self.towers, self.size, self.alpha, self.beta, self.k)


class CrossLRN(nn.Module):
    """Caffe's LRN: the window runs over all channels, across the tower boundary (ref §5)."""

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        return response_norm(x, CHANNEL, 1, self.size, self.alpha, self.beta, self.k)


class SpatialNorm(nn.Module):
    """[C12]'s same-map 5x5 response norm after LRN2 (ref §1.3).

    ``a / (1 + 0.001 * avgpool5x5(a^2))^0.75`` with zero padding counted in the average; fused
    and in fp32 inside as LRN (:mod:`.norms`).
    """

    def __init__(self, size=5, scale=0.001, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.scale, self.beta, self.k = size, scale, beta, k

    def forward(self, x):
        return response_norm(x, SPATIAL, 1, self.size, self.scale, self.beta, self.k)


class TowerDropout(TowerOp):
    """Dropout whose mask bits for tower t depend only on (seed, step, layer, t).

    The two-rank run and the one-process network therefore draw the same bits for the same
    units, and a resumed run draws what an unbroken one would. ``style``: ``paper`` masks in
    training and multiplies by 0.5 at test ([P] §4.2, [C12]); ``inverted`` scales by 2 in
    training instead; ``none`` is the identity. ``width``: units per tower.

    The trainer draws each step's mask before the forward pass (:func:`set_dropout_step` with
    the batch size), so a compiled forward reads it as an input: no generator inside the graph
    (a graph break) and no step number in it (a recompile per step). Without a drawn mask of the
    input's shape the forward draws the same bits itself.
    """

    def __init__(self, towers=2, p=0.5, style="paper", layer=0, width=0):
        super().__init__(towers)
        self.p, self.style, self.layer, self.width = p, style, layer, width
        self.seed = 0
        self.step = 0  # set by the trainer before each forward (set_dropout_step)
        self.keep: torch.Tensor | None = None  # (N, towers * width) bool: this step's mask

    def forward(self, x):
        if self.style == "none":
            return x
        if not self.training:
            return x * (1 - self.p) if self.style == "paper" else x
        scale = 1.0 if self.style == "paper" else 1.0 / (1 - self.p)
        keep = self.keep
        if keep is None or keep.shape != x.shape or keep.device != x.device:
            keep = self.draw(x.shape[0], x.shape[1] // self.towers, x.device)
        x = x * keep  # the bool mask promotes to x's dtype in the product: one kernel
        return x if scale == 1.0 else x * scale

    def draw(self, batch: int, width: int, device) -> torch.Tensor:
        """This step's keep mask (batch, towers * width): tower by tower, each from its own
        generator seeded by (seed, step, layer, tower), drawn on ``device``."""
        parts = []
        for t in range(self.tower, self.tower + self.towers):
            g = torch.Generator(device=device)
            g.manual_seed(((self.seed * 1_000_003 + self.step) * 101 + self.layer) * 7 + t)
            parts.append(torch.rand((batch, width), generator=g, device=device) >= self.p)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def set_dropout_step(
    module: nn.Module, step: int, seed: int | None = None, batch: int = 0, device=None
) -> None:
    """Tell every TowerDropout in ``module`` which training step (and seed) it is in; with
    ``batch`` (and the ``device``), draw the step's masks now, outside any compiled forward."""
    for m in module.modules():
        if isinstance(m, TowerDropout):
            m.step = step
            if seed is not None:
                m.seed = seed
            m.keep = None
            if batch and m.width and m.training and m.style != "none":
                m.keep = m.draw(batch, m.width, torch.device(device or "cpu"))


class Overhang(nn.Module):
    """Zero-pad right and bottom so a valid conv covers the input as cuda-convnet's did.

    cuda-convnet sizes outputs with a ceiling (ref §1.1): 224 -> 55 for conv1 11/4, the last
    window reading 3 px of zeros past the right and bottom edges.
    """

    def __init__(self, extra: int):
        super().__init__()
        self.extra = extra

    def forward(self, x):
        return F.pad(x, (0, self.extra, 0, self.extra)) if self.extra else x
