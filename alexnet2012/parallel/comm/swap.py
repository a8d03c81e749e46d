"""The overlapped exchange: a cross layer's input swapped with the peer tower while this
tower computes its own part (``parallel.overlap``), as an autograd pair of two halves. Each
half starts or awaits the batched send/receive; its counters are a :class:`~.meter.Meter`
around it (kind "")."""

from __future__ import annotations

import torch
import torch.distributed as dist

from alexnet2012.parallel.comm.group import TowerGroup
from alexnet2012.parallel.comm.meter import Meter, nbytes


class Pending:
    """An exchange in flight between :func:`swap_start` and :func:`swap_finish`."""

    def __init__(self, g: TowerGroup, name: str | None):
        self.g, self.meter = g, Meter(g, name)
        self.works: list = []
        self.grad_works: list = []
        self.grad_in: torch.Tensor | None = None

    def exchange(self, send: torch.Tensor, recv: torch.Tensor) -> list:
        """Start sending ``send`` to the peer tower and receiving into ``recv``; the works."""
        peer = self.g.global_rank(1 - self.g.rank)
        ops = [dist.P2POp(dist.isend, send, peer, self.g.group),
               dist.P2POp(dist.irecv, recv, peer, self.g.group)]  # fmt: skip
        return dist.batch_isend_irecv(ops)


def _wait(works: list) -> None:
    for w in works:
        w.wait()


class _SwapStart(torch.autograd.Function):
    """forward: start sending x to the peer (returns the receive buffer, not yet filled);
    backward: wait for the peer's gradient of x (started by :class:`_SwapFinish`'s backward)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: Pending) -> torch.Tensor:
        ctx.p = p
        x = x.contiguous()
        buf = torch.empty_like(x)
        with p.meter("", x, nbytes(x)):
            p.works = p.exchange(x, buf)
        return buf

    @staticmethod
    def backward(ctx, _unused: torch.Tensor):
        p = ctx.p
        with p.meter("", p.grad_in):
            _wait(p.grad_works)
        return p.grad_in, None


class _SwapFinish(torch.autograd.Function):
    """forward: wait for the peer's activation; backward: start sending the peer its gradient
    and receiving ours (awaited in :class:`_SwapStart`'s backward, after our own-part work)."""

    @staticmethod
    def forward(ctx, buf: torch.Tensor, p: Pending) -> torch.Tensor:
        ctx.p = p
        with p.meter("", buf):
            _wait(p.works)
        return buf.view_as(buf)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        p = ctx.p
        grad = grad.contiguous()
        p.grad_in = torch.empty_like(grad)
        with p.meter("", grad, nbytes(grad)):
            p.grad_works = p.exchange(grad, p.grad_in)
        return grad, None  # a placeholder: _SwapStart returns the received gradient


def swap_start(
    x: torch.Tensor, group: TowerGroup, name: str | None
) -> tuple[torch.Tensor, Pending]:
    """Begin swapping this tower's activation with the peer tower's (two ranks).

    forward: isend/irecv started, backward: the peer's gradient for ``x`` awaited. Compute the
    own-tower part of the cross layer, then call :func:`swap_finish` for the peer's activation;
    together the pair moves what :func:`gather_towers` moves, but overlapped with compute.
    Counted under ``name`` (None: not counted).
    """
    if group.size != 2:
        raise ValueError(f"overlapped exchanges need a tower pair (2 ranks), got {group.size}")
    p = Pending(group, name)
    return _SwapStart.apply(x, p), p


def swap_finish(buf: torch.Tensor, pending: Pending) -> torch.Tensor:
    """The peer tower's activation. forward: wait; backward: start sending its gradient back."""
    return _SwapFinish.apply(buf, pending)
