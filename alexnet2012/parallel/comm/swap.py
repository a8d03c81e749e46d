"""The overlapped exchange: a cross layer's input swapped with the peer tower while this
tower computes its own part (``parallel.overlap``), as an autograd pair of two halves."""

from __future__ import annotations

import torch
import torch.distributed as dist

from alexnet2012.parallel.comm.exchanges import _nbytes
from alexnet2012.parallel.comm.group import TowerGroup


class Pending:
    """An exchange in flight between :func:`swap_start` and :func:`swap_finish`."""

    def __init__(self, g: TowerGroup, name: str):
        self.g, self.name = g, name
        self.works: list = []
        self.grad_works: list = []
        self.grad_in: torch.Tensor | None = None

    def exchange(self, send: torch.Tensor, recv: torch.Tensor) -> list:
        """Start sending ``send`` to the peer tower and receiving into ``recv``; the works."""
        peer = self.g.global_rank(1 - self.g.rank)
        ops = [dist.P2POp(dist.isend, send, peer, self.g.group),
               dist.P2POp(dist.irecv, recv, peer, self.g.group)]  # fmt: skip
        return dist.batch_isend_irecv(ops)


class _SwapStart(torch.autograd.Function):
    """forward: start sending x to the peer (returns the receive buffer, not yet filled);
    backward: wait for the peer's gradient of x (started by :class:`_SwapFinish`'s backward)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: Pending) -> torch.Tensor:
        ctx.p = p
        x = x.contiguous()
        buf = torch.empty_like(x)
        t0 = p.g.clock(x)
        p.works = p.exchange(x, buf)
        p.g.count(p.name, _nbytes(x), t0)
        return buf

    @staticmethod
    def backward(ctx, _unused: torch.Tensor):
        p = ctx.p
        t0 = p.g.clock(p.grad_in)
        for w in p.grad_works:
            w.wait()
        p.g.count(p.name, 0, t0)
        return p.grad_in, None


class _SwapFinish(torch.autograd.Function):
    """forward: wait for the peer's activation; backward: start sending the peer its gradient
    and receiving ours (awaited in :class:`_SwapStart`'s backward, after our own-part work)."""

    @staticmethod
    def forward(ctx, buf: torch.Tensor, p: Pending) -> torch.Tensor:
        ctx.p = p
        t0 = p.g.clock(buf)
        for w in p.works:
            w.wait()
        p.g.count(p.name, 0, t0)
        return buf.view_as(buf)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        p = ctx.p
        grad = grad.contiguous()
        p.grad_in = torch.empty_like(grad)
        t0 = p.g.clock(grad)
        p.grad_works = p.exchange(grad, p.grad_in)
        p.g.count(p.name, _nbytes(grad), t0)
        return grad, None  # a placeholder: _SwapStart returns the received gradient


def swap_start(x: torch.Tensor, group: TowerGroup, name: str) -> tuple[torch.Tensor, Pending]:
    """Begin swapping this tower's activation with the peer tower's (two ranks).

    forward: isend/irecv started, backward: the peer's gradient for ``x`` awaited. Compute the
    own-tower part of the cross layer, then call :func:`swap_finish` for the peer's activation;
    together the pair moves what :func:`gather_towers` moves, but overlapped with compute.
    """
    if group.size != 2:
        raise ValueError(f"overlapped exchanges need a tower pair (2 ranks), got {group.size}")
    p = Pending(group, name)
    return _SwapStart.apply(x, p), p


def swap_finish(buf: torch.Tensor, pending: Pending) -> torch.Tensor:
    """The peer tower's activation. forward: wait; backward: start sending its gradient back."""
    return _SwapFinish.apply(buf, pending)
