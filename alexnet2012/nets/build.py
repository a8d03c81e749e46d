"""Build the configured network: the two-tower AlexNet2012 or a baseline."""

from __future__ import annotations

from torch import nn

from alexnet2012.config import Config, init_for
from alexnet2012.nets import baselines
from alexnet2012.nets.model import PRESETS, AlexNet2012


def input_size(cfg: Config) -> int:
    """The image size the configured model takes (the preset's, unless set)."""
    if cfg.model.input_size:
        return cfg.model.input_size
    return PRESETS[cfg.model.preset].input_size if cfg.model.name == "alexnet2012" else 224


def build_model(cfg: Config, num_classes: int, in_channels: int) -> nn.Module:
    m, size = cfg.model, input_size(cfg)
    widths = tuple(m.widths) or None
    if m.name == "alexnet2012":
        net = AlexNet2012(
            num_classes=num_classes,
            in_channels=in_channels,
            preset=m.preset,
            widths=widths,
            input_size=size,
            cross=m.cross,
            half=m.half,
            lrn=m.lrn,
            overlap_pool=m.overlap_pool,
            dropout=m.dropout,
            init=m.init,
            seed=cfg.seed,
        )
        for block in net.blocks():
            block.per_tower = cfg.train.grouped == "per_tower"
        return net
    if m.name == "streamlined":
        init = init_for(m.name, m.init)
        return baselines.seeded(
            baselines.streamlined, cfg.seed, num_classes, in_channels, widths, size, init
        )
    return baselines.seeded(
        baselines.torchvision_alexnet, cfg.seed, num_classes, in_channels, widths
    )
