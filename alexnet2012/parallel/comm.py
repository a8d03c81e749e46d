"""Every exchange between the two towers: the only module that calls torch.distributed collectives.

A :class:`TowerGroup` is the set of ranks that hold one AlexNet2012 tower each (rank r holds
channels ``[r*C/size, (r+1)*C/size)`` of every activation). The three exchanges of the 2012 net
are autograd pairs, each "forward: X, backward: Y" (Megatron's ``tensor_parallel/mappings.py``):

* :func:`gather_towers`: a cross layer (conv3, fc6, fc7) reads both towers ([P] §3.5).
* :func:`gather_to_head`: fc8 and the softmax live on one rank ([C12], ref §1).
* :func:`sum_partials`: fc8 split by input halves, partial logits summed.

All are built on public ``torch.distributed`` calls (``torch.distributed.nn.functional`` is
deprecated, ``_functional_collectives`` private; docs/parallel.md) and are the identity on a
group of one rank. Each counts the bytes this rank sends and the host time spent in the calls,
under the exchange's name, forward and backward together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class TowerGroup:
    """The ranks of one tower pair, with per-exchange traffic counters.

    ``group`` is the ProcessGroup (None: the default group, or no distribution at all when
    ``size == 1``); ``rank`` and ``size`` are this rank's tower index and the number of towers.
    ``bytes_sent[name]`` counts bytes this rank hands to sends and collectives (the logical
    volume: an all-gather of a shard sends ``shard_bytes * (size - 1)``, whatever gloo does
    underneath); ``wait_s[name]`` is the host time inside those calls (on CUDA, NCCL calls
    return once enqueued, so it is launch time there, not transfer time).
    """

    group: Any = None  # dist.ProcessGroup | None
    rank: int = 0
    size: int = 1
    bytes_sent: dict[str, int] = field(default_factory=dict)
    wait_s: dict[str, float] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.size > 1

    def reset_counters(self) -> None:
        self.bytes_sent.clear()
        self.wait_s.clear()

    def global_rank(self, group_rank: int) -> int:
        """The default-group rank of tower ``group_rank`` (what send/recv/broadcast take)."""
        return group_rank if self.group is None else dist.get_global_rank(self.group, group_rank)

    def count(self, name: str, nbytes: int, t0: float) -> None:
        self.bytes_sent[name] = self.bytes_sent.get(name, 0) + int(nbytes)
        self.wait_s[name] = self.wait_s.get(name, 0.0) + time.perf_counter() - t0


def single() -> TowerGroup:
    """A group of one rank: every exchange is the identity and counts zero bytes."""
    return TowerGroup()


def world() -> TowerGroup:
    """The default process group as a tower group (:func:`single` when not initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return single()
    return TowerGroup(dist.group.WORLD, dist.get_rank(), dist.get_world_size())


# torch 2.14 deprecates the *_into_tensor / *_tensor names (FutureWarning) for *_single
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class _GatherTowers(torch.autograd.Function):
    """forward: all-gather along dim 1 (rank order), backward: reduce-scatter (sum, keep own)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, g: TowerGroup, name: str) -> torch.Tensor:
        ctx.g, ctx.name = g, name
        x = x.contiguous()  # (N, c, ...) this tower's channels
        t0 = time.perf_counter()
        n, c, rest = x.shape[0], x.shape[1], x.shape[2:]
        out = x.new_empty((g.size * n, c, *rest))  # rank-major; gloo rejects the stacked form
        _all_gather_single(out, x, group=g.group)
        g.count(name, _nbytes(x) * (g.size - 1), t0)
        return out.view(g.size, n, c, *rest).movedim(0, 1).reshape(n, g.size * c, *rest)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g = ctx.g
        n, c, rest = grad.shape[0], grad.shape[1] // g.size, grad.shape[2:]
        parts = grad.reshape(n, g.size, c, *rest).movedim(1, 0).reshape(g.size * n, c, *rest)
        t0 = time.perf_counter()
        out = grad.new_empty((n, c, *rest))
        _reduce_scatter_single(out, parts, op=dist.ReduceOp.SUM, group=g.group)
        g.count(ctx.name, _nbytes(out) * (g.size - 1), t0)
        return out, None, None


class _GatherToHead(torch.autograd.Function):
    """forward: send to the head, which concatenates along dim 1; backward: head sends slices."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, g: TowerGroup, name: str, head: int) -> torch.Tensor:
        ctx.g, ctx.name, ctx.head = g, name, head
        ctx.shape, ctx.dtype, ctx.device = x.shape, x.dtype, x.device
        x = x.contiguous()
        t0 = time.perf_counter()
        if g.rank != head:
            dist.send(x, dst=g.global_rank(head), group=g.group)
            g.count(name, _nbytes(x), t0)
            return x.new_empty((x.shape[0], 0, *x.shape[2:]))  # (N, 0): still on x's graph
        parts = [x if r == head else torch.empty_like(x) for r in range(g.size)]
        works = [
            dist.irecv(parts[r], src=g.global_rank(r), group=g.group)
            for r in range(g.size)
            if r != head
        ]
        for w in works:
            w.wait()
        g.count(name, 0, t0)
        return torch.cat(parts, dim=1)  # (N, size*c, ...) in rank order

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g, head = ctx.g, ctx.head
        t0 = time.perf_counter()
        if g.rank != head:
            out = torch.empty(ctx.shape, dtype=ctx.dtype, device=ctx.device)
            dist.recv(out, src=g.global_rank(head), group=g.group)
            g.count(ctx.name, 0, t0)
            return out, None, None, None
        parts = [p.contiguous() for p in grad.chunk(g.size, dim=1)]
        works = [
            dist.isend(parts[r], dst=g.global_rank(r), group=g.group)
            for r in range(g.size)
            if r != head
        ]
        for w in works:
            w.wait()
        g.count(ctx.name, sum(_nbytes(parts[r]) for r in range(g.size) if r != head), t0)
        return parts[head], None, None, None


class _SumPartials(torch.autograd.Function):
    """forward: all-reduce sum, backward: identity (Megatron's reduce-from region)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, g: TowerGroup, name: str) -> torch.Tensor:
        out = x.clone(memory_format=torch.contiguous_format)
        t0 = time.perf_counter()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=g.group)
        # a ring all-reduce sends 2 (size-1)/size of the tensor per rank (the tensor at size 2)
        g.count(name, _nbytes(out) * 2 * (g.size - 1) // g.size, t0)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


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
        t0 = time.perf_counter()
        p.works = p.exchange(x, buf)
        p.g.count(p.name, _nbytes(x), t0)
        return buf

    @staticmethod
    def backward(ctx, _unused: torch.Tensor):
        p = ctx.p
        t0 = time.perf_counter()
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
        t0 = time.perf_counter()
        for w in p.works:
            w.wait()
        p.g.count(p.name, 0, t0)
        return buf.view_as(buf)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        p = ctx.p
        grad = grad.contiguous()
        p.grad_in = torch.empty_like(grad)
        t0 = time.perf_counter()
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


def gather_towers(x: torch.Tensor, group: TowerGroup, name: str) -> torch.Tensor:
    """(N, c, ...) per tower -> (N, size*c, ...), rank 0's channels first, on every rank.

    forward: all-gather along channels, backward: reduce-scatter. Each rank computes different
    outputs from the gathered input, so its input gradient is the sum over ranks of their
    partial gradients, of which it keeps its own channel slice.
    """
    return x if group.size == 1 else _GatherTowers.apply(x, group, name)


def gather_to_head(x: torch.Tensor, group: TowerGroup, name: str, head: int = 0) -> torch.Tensor:
    """(N, c, ...) per tower -> (N, size*c, ...) on ``head``; (N, 0, ...) on the other ranks.

    forward: send/recv to the head, backward: the head sends each rank its gradient slice.
    All ranks' ``x`` must have the same shape and dtype. All ranks must call ``backward`` on a
    loss that depends on the returned tensor (off the head, e.g. ``out.sum()``, which is zero),
    or the head blocks in backward waiting to send.
    """
    return x if group.size == 1 else _GatherToHead.apply(x, group, name, head)


def sum_partials(x: torch.Tensor, group: TowerGroup, name: str) -> torch.Tensor:
    """Sum of every rank's partial ``x`` (e.g. fc8 logits from each input half), on every rank.

    forward: all-reduce sum, backward: identity. Every rank computes the same loss from the sum;
    an all-reduce backward would make each gradient ``size`` times too large (parallel.md).
    """
    return x if group.size == 1 else _SumPartials.apply(x, group, name)


# ----- plain helpers (no autograd, not counted) ---------------------------------------------


def broadcast(tensor: torch.Tensor, group: TowerGroup, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with tower ``src``'s and return it."""
    if group.size > 1:
        dist.broadcast(tensor, src=group.global_rank(src), group=group.group)
    return tensor


def all_reduce_sum(tensor: torch.Tensor, group: TowerGroup) -> torch.Tensor:
    """Sum ``tensor`` over the towers, in place; returns it."""
    if group.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group.group)
    return tensor


@torch.no_grad()
def all_gather_cat(tensor: torch.Tensor, group: TowerGroup, dim: int) -> torch.Tensor:
    """Every tower's ``tensor`` (same shape on all) concatenated along ``dim`` in rank order."""
    if group.size == 1:
        return tensor
    tensor = tensor.detach().contiguous()
    parts = [torch.empty_like(tensor) for _ in range(group.size)]
    dist.all_gather(parts, tensor, group=group.group)
    return torch.cat(parts, dim=dim)


def broadcast_object(obj: Any, group: TowerGroup, src: int = 0) -> Any:
    """Tower ``src``'s picklable ``obj``, on every rank."""
    if group.size == 1:
        return obj
    box = [obj if group.rank == src else None]
    dist.broadcast_object_list(box, src=group.global_rank(src), group=group.group)
    return box[0]


def barrier(group: TowerGroup) -> None:
    """Wait until every tower reaches this point."""
    if group.size > 1:
        dist.barrier(group=group.group)
