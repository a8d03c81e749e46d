"""The split plan, the one source of what the two-rank execution may split and how.

Which layers read both towers is data (``model.cross``, ref §1); where each canonical parameter
lives across the two ranks is :func:`placement`; which nets cannot be split at all is
:func:`refusal`. The execution slices by :func:`local_slice`, and ``bench`` asks
:func:`rank_param_bytes` for a split it did not run, on the meta device (shapes only).
"""

from __future__ import annotations

import torch
from torch import nn

from alexnet2012.nets.layers import CrossLRN
from alexnet2012.nets.model import AlexNet2012

RANKS = 2  # a tower pair: GPU0 and GPU1 of 2012


class PlanError(ValueError):
    """The network cannot be split the way the configuration asks."""


def placement(name: str, fc8: str) -> tuple:
    """Where canonical parameter ``name`` lives across the two towers.

    ``("dim", d)``: rank r holds chunk r along dim d (each tower's own output units; fc8 split
    by input halves). ``("head",)``: the head rank holds it whole (fc8 as in [C12], ref §1).
    """
    layer, kind = name.split(".")
    if layer != "fc8":
        return ("dim", 0)  # a tower computes its own half of every layer's outputs
    if fc8 == "rank0":
        return ("head",)
    return ("dim", 1) if kind == "weight" else ("head",)  # split: partial logits, one bias


def local_slice(name: str, full: torch.Tensor, fc8: str, rank: int, size: int = RANKS):
    """Rank ``rank``'s piece of canonical tensor ``name`` (a view), or None if it holds none."""
    where = placement(name, fc8)
    if where[0] == "head":
        return full if rank == 0 else None
    return full.chunk(size, dim=where[1])[rank]


def refusal(model: nn.Module) -> str | None:
    """Why ``model`` cannot run as a tower pair, or None when it can."""
    if not isinstance(model, AlexNet2012):
        return "only the two-tower alexnet2012 model can run on two ranks"
    if model.towers != 2:
        return "the one-column 'half' net has a single tower: run it in one process"
    if any(isinstance(m, CrossLRN) for m in model.modules()):
        return "this preset's LRN runs across the tower boundary (Caffe's): run it in one process"
    return None


def rank_param_bytes(model: nn.Module, fc8: str) -> list[int]:
    """Each rank's parameter bytes under the plan, from ``model``'s shapes (meta is enough)."""
    out = [0] * RANKS
    for name, full in model.state_dict().items():
        for r in range(RANKS):
            piece = local_slice(name, full, fc8, r)
            if piece is not None:
                out[r] += piece.numel() * piece.element_size()
    return out
