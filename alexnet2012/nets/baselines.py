"""The networks users compare against: d2l's streamlined AlexNet and torchvision's alexnet."""

from __future__ import annotations

import math

import torch
from torch import nn

D2L_WIDTHS = (96, 256, 384, 384, 256, 4096, 4096)  # ref §5 [D2L]
TV_WIDTHS = (64, 192, 384, 256, 256, 4096, 4096)  # ref §5 [TV]


def _pool(size: int) -> int:
    return (size - 3) // 2 + 1


def streamlined(num_classes=10, in_channels=1, widths=None, input_size=224, init="default"):
    """d2l.ai's AlexNet ("Deep Convolutional Neural Networks", ref §5).

    conv1 11/4 pad 1 (224 -> 54 -> 26 -> 12 -> 5), no LRN, no groups, dropout after fc6/fc7.
    ``init``: ``default`` is PyTorch's (what d2l 1.0 ends up with, ref §5), ``xavier`` d2l 0.17's.
    """
    c = tuple(widths or D2L_WIDTHS)
    s = _pool(math.floor((input_size + 2 - 11) / 4) + 1)  # conv1 then pool1
    s = _pool(_pool(s))  # conv2 keeps size; pool2; conv3-5 keep size; pool5
    if s < 1:
        raise ValueError(f"input size {input_size} is too small for the streamlined net")
    net = nn.Sequential(
        nn.Conv2d(in_channels, c[0], 11, 4, 1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(c[0], c[1], 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(),
        nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(),
        nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten(),
        nn.Linear(c[4] * s * s, c[5]), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(c[5], c[6]), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(c[6], num_classes),
    )  # fmt: skip
    if init == "xavier":
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(m.weight)
    return net


def torchvision_alexnet(num_classes=1000, in_channels=3, widths=None, dropout=0.5):
    """torchvision's ``alexnet`` (the 2014 one-tower variant, ref §5 [TV]), untrained."""
    from torchvision.models import alexnet

    net = alexnet(weights=None, num_classes=num_classes, dropout=dropout)
    c = tuple(widths or TV_WIDTHS)
    if c != TV_WIDTHS or in_channels != 3:  # same topology, other widths or input channels
        f = net.features
        f[0] = nn.Conv2d(in_channels, c[0], 11, 4, 2)
        f[3] = nn.Conv2d(c[0], c[1], 5, padding=2)
        f[6] = nn.Conv2d(c[1], c[2], 3, padding=1)
        f[8] = nn.Conv2d(c[2], c[3], 3, padding=1)
        f[10] = nn.Conv2d(c[3], c[4], 3, padding=1)
        k = net.classifier
        k[1] = nn.Linear(c[4] * 36, c[5])
        k[4] = nn.Linear(c[5], c[6])
        k[6] = nn.Linear(c[6], num_classes)
    return net


@torch.no_grad()
def seeded(build, seed: int, *args, **kwargs) -> nn.Module:
    """Build a baseline with its own default init drawn from ``seed``, leaving global RNG as is."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(*args, **kwargs)
