"""The autograd exchanges of the 2012 net, one per kind of cross layer (the package docstring).

Each is a pair "forward: X, backward: Y" (Megatron's ``tensor_parallel/mappings.py``) that does
the arithmetic and the collective only, and is the identity on a group of one rank. The counters
are a :class:`~.meter.Meter` around each collective (none without a name). Every tensor handed to
a collective or a send is contiguous, whatever the layout (channels_last) and batch size: NCCL
refuses other tensors, and reads a dense permuted one in memory order.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from alexnet2012.parallel.comm.group import TowerGroup
from alexnet2012.parallel.comm.loopback import ops
from alexnet2012.parallel.comm.meter import Meter, nbytes


# torch 2.14 deprecates the *_into_tensor / *_tensor names (FutureWarning) for *_single
def _all_gather_single(out, x, group):
    d = ops(group)
    (getattr(d, "all_gather_single", None) or d.all_gather_into_tensor)(out, x, group=group)


def _reduce_scatter_single(out, parts, op, group):
    d = ops(group)
    call = getattr(d, "reduce_scatter_single", None) or d.reduce_scatter_tensor
    call(out, parts, op=op, group=group)


class _GatherTowers(torch.autograd.Function):
    """forward: all-gather along dim 1 (rank order), backward: reduce-scatter (sum, keep own)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, g: TowerGroup, meter: Meter) -> torch.Tensor:
        ctx.g, ctx.meter = g, meter
        x = x.contiguous()  # (N, c, ...) this tower's channels
        with meter("all_gather", x, nbytes(x) * (g.size - 1)):
            out = x.new_empty((g.size * x.shape[0], *x.shape[1:]))  # rank-major (gloo: no stack)
            _all_gather_single(out, x, group=g.group)
        return _channels_from_ranks(out, g.size)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g = ctx.g
        n, c, rest = grad.shape[0], grad.shape[1] // g.size, grad.shape[2:]
        parts = grad.reshape(n, g.size, c, *rest).movedim(1, 0).reshape(g.size * n, c, *rest)
        # at n=1 the reshape is a view in channel-major order (any layout): make it rank-major
        parts = parts.contiguous()
        with ctx.meter("reduce_scatter", parts, nbytes(parts) // g.size * (g.size - 1)):
            out = grad.new_empty((n, c, *rest))
            _reduce_scatter_single(out, parts, op=dist.ReduceOp.SUM, group=g.group)
        return out, None, None


def _channels_from_ranks(out: torch.Tensor, size: int) -> torch.Tensor:
    """(size*N, c, ...) rank-major -> (N, size*c, ...), rank 0's channels first."""
    n, c, rest = out.shape[0] // size, out.shape[1], out.shape[2:]
    return out.view(size, n, c, *rest).movedim(0, 1).reshape(n, size * c, *rest)


def gathered_stand_in(x: torch.Tensor, group: TowerGroup) -> torch.Tensor:
    """What :func:`gather_towers` returns for ``x`` (shape, dtype and strides), with zeros for
    the other towers' channels and no exchange: to compile the layers after it ahead of time."""
    if group.size == 1:
        return x
    x = x.contiguous()
    out = x.new_zeros((group.size * x.shape[0], *x.shape[1:]))
    out[group.rank * x.shape[0] : (group.rank + 1) * x.shape[0]] = x
    return _channels_from_ranks(out, group.size)


def _with_each_peer(p2p, parts: list, g: TowerGroup, head: int) -> None:
    """``p2p`` ("isend" or "irecv") of ``parts[r]`` with every rank r but the head; all awaited."""
    p2p = getattr(ops(g.group), p2p)  # "isend" or "irecv"
    works = [p2p(parts[r], g.global_rank(r), group=g.group) for r in range(g.size) if r != head]
    for w in works:
        w.wait()


class _GatherToHead(torch.autograd.Function):
    """forward: send to the head, which concatenates along dim 1; backward: head sends slices."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, g: TowerGroup, meter: Meter, head: int) -> torch.Tensor:
        ctx.g, ctx.meter, ctx.head = g, meter, head
        ctx.shape, ctx.dtype, ctx.device = x.shape, x.dtype, x.device
        x = x.contiguous()
        if g.rank != head:
            with meter("to_head", x, nbytes(x)):
                ops(g.group).send(x, dst=g.global_rank(head), group=g.group)
            return x.new_empty((x.shape[0], 0, *x.shape[2:]))  # (N, 0): still on x's graph
        with meter("to_head", x, 0):
            parts = [x if r == head else torch.empty_like(x) for r in range(g.size)]
            _with_each_peer("irecv", parts, g, head)
        return torch.cat(parts, dim=1)  # (N, size*c, ...) in rank order

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g, head = ctx.g, ctx.head
        if g.rank != head:
            with ctx.meter("from_head", grad, 0):
                out = torch.empty(ctx.shape, dtype=ctx.dtype, device=ctx.device)
                ops(g.group).recv(out, src=g.global_rank(head), group=g.group)
            return out, None, None, None
        # the slices sent: every rank's but the head's (equal chunks of the channels)
        with ctx.meter("from_head", grad, nbytes(grad) // g.size * (g.size - 1)):
            parts = [p.contiguous() for p in grad.chunk(g.size, dim=1)]
            _with_each_peer("isend", parts, g, head)
        return parts[head], None, None, None


class _SumPartials(torch.autograd.Function):
    """forward: all-reduce sum, backward: identity (Megatron's reduce-from region)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, g: TowerGroup, meter: Meter) -> torch.Tensor:
        out = x.clone(memory_format=torch.contiguous_format)
        # a ring all-reduce sends 2 (size-1)/size of the tensor per rank (the tensor at size 2)
        with meter("all_reduce", out, nbytes(out) * 2 * (g.size - 1) // g.size):
            ops(g.group).all_reduce(out, op=dist.ReduceOp.SUM, group=g.group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


def gather_towers(x: torch.Tensor, group: TowerGroup, name: str | None) -> torch.Tensor:
    """(N, c, ...) per tower -> (N, size*c, ...), rank 0's channels first, on every rank.

    forward: all-gather along channels, backward: reduce-scatter. Each rank computes different
    outputs from the gathered input, so its input gradient is the sum over ranks of their
    partial gradients, of which it keeps its own channel slice. Counted under ``name`` (None:
    not counted), forward and backward together.
    """
    return x if group.size == 1 else _GatherTowers.apply(x, group, Meter(group, name))


def gather_to_head(
    x: torch.Tensor, group: TowerGroup, name: str | None, head: int = 0
) -> torch.Tensor:
    """(N, c, ...) per tower -> (N, size*c, ...) on ``head``; (N, 0, ...) on the other ranks.

    forward: send/recv to the head, backward: the head sends each rank its gradient slice.
    All ranks' ``x`` must have the same shape and dtype. All ranks must call ``backward`` on a
    loss that depends on the returned tensor (off the head, e.g. ``out.sum()``, which is zero),
    or the head blocks in backward waiting to send.
    """
    return x if group.size == 1 else _GatherToHead.apply(x, group, Meter(group, name), head)


def sum_partials(x: torch.Tensor, group: TowerGroup, name: str | None) -> torch.Tensor:
    """Sum of every rank's partial ``x`` (e.g. fc8 logits from each input half), on every rank.

    forward: all-reduce sum, backward: identity. Every rank computes the same loss from the sum;
    an all-reduce backward would make each gradient ``size`` times too large (parallel.md).
    """
    return x if group.size == 1 else _SumPartials.apply(x, group, Meter(group, name))
