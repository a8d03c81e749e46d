"""The split as a rewrite of the module tree (torchtitan's ``parallelize`` step): a rank keeps
its slices of the plain :class:`~alexnet2012.nets.model.AlexNet2012` and runs it as a
:class:`TowerNet`, the exchanges placed by the plan between its blocks ([P] §3.5, ref §1).

``parallelize(model, group, fc8, overlap)(x)`` is this rank's whole forward; DDP wraps the
tower as it is, :meth:`TowerNet.compile` compiles it as it is (graph breaks at the exchanges), and
:meth:`TowerNet.compile_runs` compiles each run of blocks between two exchanges as one graph.
"""

from __future__ import annotations

import torch
from torch import nn

from alexnet2012.nets.layers import TowerOp
from alexnet2012.nets.model import AlexNet2012, Block
from alexnet2012.parallel import comm
from alexnet2012.parallel.layers import (
    GatherToHead,
    GatherTowers,
    SumPartials,
    SwapCross,
    keep_eager,
)
from alexnet2012.parallel.plan import RANKS, PlanError, local_slice, refusal


class TowerNet(nn.Module):
    """One rank's tower: the blocks under their canonical names (``conv1`` ... ``fc8``, this
    rank's slices), each cross layer preceded by its exchange (``conv3_gather``: a
    :class:`GatherTowers`) or overlapped with it (a :class:`SwapCross` named ``conv3``), fc8
    preceded by ``fc8_gather`` (to the head, which alone holds fc8) or followed by ``fc8_sum``
    (fc8 split by input halves). The exchanges hold no parameters: ``state_dict()`` holds
    exactly this rank's pieces of the canonical state, under the canonical names.
    """

    def __init__(self, steps: list[tuple[str, nn.Module]]):
        super().__init__()
        for name, m in steps:
            self.add_module(name, m)
        # what forward calls in turn: runs of plain blocks as one Sequential (one graph each
        # when compiled), exchanges, swaps and everything from the fc8 exchange on alone
        self._stages: list[nn.Module] = []
        self._features = 0  # the stages up to fc7's output
        for name, m in steps:
            if name.startswith("fc8"):
                self._features = self._features or len(self._stages)
                self._stages.append(m)
            elif type(m) is Block and self._stages and type(self._stages[-1]) is nn.Sequential:
                self._stages[-1].append(m)
            else:
                self._stages.append(nn.Sequential(m) if type(m) is Block else m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes); on a rank without fc8 an (N, 0) stand-in."""
        for stage in self._stages:
            x = stage(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """conv1..fc7 of this rank: (N, fc7 width / 2), before the fc8 exchange."""
        for stage in self._stages[: self._features]:
            x = stage(x)
        return x

    def blocks(self) -> list[Block]:
        """This rank's layers in order (no fc8 on a rank that does not hold it)."""
        return [m for m in self.children() if isinstance(m, Block)]

    def compile(self, *args, **kwargs) -> None:
        """``nn.Module.compile`` (in place) of the tower as it is: graph breaks at the
        exchanges, which stay eager."""
        keep_eager()
        super().compile(*args, **kwargs)

    def compile_runs(self) -> None:
        """``train.compile``: each run of blocks between two exchanges becomes one graph (a
        tower's conv stack is one graph up to its exchange); the exchanges, the overlapped
        cross layers and fc8 (one matrix product, not worth a graph) stay eager."""
        keep_eager()
        head = self._features
        self._stages = [
            torch.compile(s) if i < head and type(s) is nn.Sequential else s
            for i, s in enumerate(self._stages)
        ]


def parallelize(
    model: AlexNet2012, group: comm.TowerGroup, fc8: str = "rank0", overlap: bool = False
) -> TowerNet:
    """This rank's :class:`TowerNet` of ``model``, whose blocks keep only this rank's slices.

    ``fc8``: ``rank0`` ([C12]: fc8 and the softmax on the head rank, the others' output an
    (N, 0) stand-in) or ``split`` (partial logits summed); ``overlap``: each cross layer's
    exchange overlapped with its own-tower part. ``model`` must be fully initialised (one seed
    for both ranks) and is changed in place.
    """
    if (why := refusal(model)) is not None:
        raise PlanError(why)
    if group.size != RANKS:
        raise PlanError(f"a tower pair needs exactly 2 ranks, got {group.size}")
    shard(model, group.rank, fc8)
    *body, head = model.blocks()
    steps: list[tuple[str, nn.Module]] = []
    for block in body:  # exchanges follow pooling, as in [P] §3.5: 13x13, 6x6, 2048
        if block.cross and overlap:
            steps.append((block.name, SwapCross(block, group)))
            continue
        if block.cross:
            steps.append((f"{block.name}_gather", GatherTowers(group, block.name)))
        steps.append((block.name, block))
    if fc8 == "split":
        steps += [("fc8", head), ("fc8_sum", SumPartials(group, "fc8"))]
    else:
        steps.append(("fc8_gather", GatherToHead(group, "fc8")))
        steps += [("fc8", head)] if group.rank == 0 else []  # [C12]: fc8 on GPU0 only
    return TowerNet(steps)


def shard(model: AlexNet2012, rank: int, fc8: str) -> None:
    """Keep tower ``rank``'s slices of every parameter of ``model`` (:func:`.plan.local_slice`;
    None where it holds none), each block reading one tower or the gathered input."""
    with torch.no_grad():
        for block in model.blocks():
            for kind in ("weight", "bias"):
                local = local_slice(f"{block.name}.{kind}", getattr(block, kind), fc8, rank)
                setattr(block, kind, None if local is None else nn.Parameter(local.clone()))
            block.groups = 1  # a rank's slice reads one tower, or the gathered input
            for m in block.modules():
                if isinstance(m, TowerOp):
                    m.towers, m.tower = 1, rank
