"""The exchanges as modules, placed in a rank's tower by :func:`.parallelize.parallelize`.

Each is parameter-free (the tower's parameter names stay the plain net's) and runs eagerly
under ``torch.compile`` (``torch.compiler.disable``, put in place by :func:`keep_eager` before a
tower compiles: collectives, counters and CUDA events are no graph material), so a compiled
tower breaks its graphs at the exchanges. In local mode
(:func:`local_exchanges`) each returns a stand-in for its result, of the real one's shape,
dtype and strides, and exchanges nothing: a rank compiles its graphs ahead of the first step
without a peer waiting (training/step.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from alexnet2012.nets.model import Block
from alexnet2012.parallel import comm

_EAGER: list[type] = []  # the classes whose forward torch.compile must leave alone


def _eager(cls: type) -> type:
    """Class decorator: ``cls.forward`` stays out of compiled graphs once :func:`keep_eager`
    ran. Not at import: ``torch.compiler.disable`` imports torch's compiler, ~150 MB of host
    memory and a second or two in every process that builds a net, compiled or not."""
    _EAGER.append(cls)
    return cls


def keep_eager() -> None:
    """``torch.compiler.disable`` around every exchange's forward (once): before anything
    compiles a tower (:meth:`.parallelize.TowerNet.compile`, ``compile_runs``)."""
    for cls in _EAGER:
        if not vars(cls).get("_kept_eager", False):
            cls.forward = torch.compiler.disable(cls.forward)
            cls._kept_eager = True


class Exchange(nn.Module):
    """Base: an exchange named ``name`` (its counters' key) among the towers of ``group``."""

    def __init__(self, group: comm.TowerGroup, name: str):
        super().__init__()
        self.group, self.name = group, name
        self.local = False  # stand-ins, nothing exchanged (local_exchanges)

    def extra_repr(self) -> str:
        return f"{self.name!r}, rank {self.group.rank} of {self.group.size}"


@_eager
class GatherTowers(Exchange):
    """Before a cross layer (conv3, fc6, fc7 in [P] §3.5): (N, c, ...) this tower's channels ->
    (N, size*c, ...) every tower's, rank 0's first; forward all-gather, backward reduce-scatter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.local:
            return comm.gathered_stand_in(x, self.group)
        return comm.gather_towers(x, self.group, self.name)


@_eager
class GatherToHead(Exchange):
    """Before fc8 on one rank ([C12], ref §1): every tower's fc7 output on ``head``, (N, 2c);
    an (N, 0) stand-in elsewhere, on the graph so that its backward sends the gradient back."""

    def __init__(self, group: comm.TowerGroup, name: str, head: int = 0):
        super().__init__(group, name)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.local:
            return comm.gather_to_head(x, self.group, self.name, self.head)
        if self.group.rank != self.head:
            return x[:, :0]
        x = x.contiguous()  # the peers' parts as zeros, in rank order
        parts = [x if r == self.group.rank else torch.zeros_like(x) for r in range(self.group.size)]
        return torch.cat(parts, dim=1)


@_eager
class SumPartials(Exchange):
    """After fc8 split by input halves: the partial logits summed on every rank; forward
    all-reduce, backward identity (Megatron's reduce-from region)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.local:
            return x.clone(memory_format=torch.contiguous_format)
        return comm.sum_partials(x, self.group, self.name)


@_eager
class SwapCross(Block):
    """A cross layer overlapped with its exchange (``parallel.overlap``): ``block``'s weights,
    ops and name, run as own-tower part + peer part (ref §1: one weight block per input tower,
    outputs summed), the swap with the peer running while the own part is computed.

    It holds ``block``'s parameters as its own, so the tower's names stay ``conv3.weight``.
    """

    def __init__(self, block: Block, group: comm.TowerGroup):
        nn.Module.__init__(self)  # the block is built: take over its settings and parts
        for k, v in vars(block).items():
            if not k.startswith("_"):  # name, groups, kernel, stride, padding, ...
                setattr(self, k, v)
        for k, v in [*block.named_parameters(recurse=False), *block.named_children()]:
            setattr(self, k, v)  # weight, bias; pre, post
        self.group = group
        self.local = False  # zeros stand in for the peer's activation, nothing exchanged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.group.rank
        w = self.weight.chunk(2, dim=1)  # input columns of tower 0, of tower 1
        x = self.pre(x)
        if self.local:  # the peer's activation arrives as swap_start sends ours: contiguous
            own, peer = self.op(x, w[r], self.bias), torch.zeros_like(x.contiguous())
        else:
            buf, pending = comm.swap_start(x, self.group, self.name)
            own = self.op(x, w[r], self.bias)
            peer = comm.swap_finish(buf, pending)
        return self.post(own + self.op(peer, w[1 - r], None))


@contextmanager
def local_exchanges(module: nn.Module) -> Iterator[nn.Module]:
    """Inside the body every exchange in ``module`` returns its stand-in and exchanges nothing."""
    found = [m for m in module.modules() if isinstance(m, (Exchange, SwapCross))]
    for m in found:
        m.local = True
    try:
        yield module
    finally:
        for m in found:
            m.local = False
