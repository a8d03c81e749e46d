"""Tower groups and the plain collectives (no autograd, not counted): broadcasts, sums,
gathers and barriers that the trainer, checkpoints and metrics use; and the groups' timeout."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from alexnet2012.parallel.comm.loopback import LOOPBACK, ops


@dataclass
class TowerGroup:
    """The ranks of one tower pair, with per-exchange traffic counters.

    ``group`` is the ProcessGroup (None: the default group, or no distribution at all when
    ``size == 1``); ``rank`` and ``size`` are this rank's tower index and the number of towers.
    ``bytes_sent[name]`` counts bytes this rank hands to sends and collectives (the logical
    volume: an all-gather of a shard sends ``shard_bytes * (size - 1)``, whatever gloo does
    underneath); ``wait_s[name]`` is the time the exchange holds this rank up: on the CPU the
    host time inside the calls (gloo returns when the transfer is done); on CUDA the time on
    the compute stream from the call to the exchange's completion, measured with CUDA events
    (NCCL calls return once enqueued, so host time would only be launch time). The events are
    read without waiting as they complete, and all of them when ``wait_s`` is read.
    ``trace``: when a list, each exchange call on the CPU also appends (name, kind, bytes, host
    clock at entry, at exit), for the per-call breakdown of ``bench --exchanges``.
    """

    group: Any = None  # dist.ProcessGroup | None
    rank: int = 0
    size: int = 1
    bytes_sent: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)  # exchange calls under each name
    _wait_s: dict[str, float] = field(default_factory=dict, repr=False)
    _pending: list = field(default_factory=list, repr=False)  # (name, start, end) CUDA events
    trace: list | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def wait_s(self) -> dict[str, float]:
        """Seconds each exchange held this rank up (waits for the device's pending events)."""
        self._settle(block=True)
        return self._wait_s

    def reset_counters(self) -> None:
        self.bytes_sent.clear()
        self.calls.clear()
        self._wait_s.clear()
        self._pending.clear()

    def global_rank(self, group_rank: int) -> int:
        """The default-group rank of tower ``group_rank`` (what send/recv/broadcast take)."""
        if self.group is None or self.group is LOOPBACK:
            return group_rank
        return dist.get_global_rank(self.group, group_rank)

    @staticmethod
    def clock(t: torch.Tensor):
        """The start mark of an exchange of ``t``, for :meth:`count`: a CUDA event recorded on
        the current stream for a CUDA tensor, else the host clock."""
        if not t.is_cuda:
            return time.perf_counter()
        start = torch.cuda.Event(enable_timing=True)
        start.record(torch.cuda.current_stream(t.device))
        return start

    def count(self, name: str, nbytes: int, t0, kind: str = "") -> None:
        """Add an exchange's bytes and the time since ``t0`` (:meth:`clock`) under ``name``;
        ``kind``: the call (:data:`.bare.KINDS`), for the trace."""
        self.bytes_sent[name] = self.bytes_sent.get(name, 0) + int(nbytes)
        self.calls[name] = self.calls.get(name, 0) + 1
        if isinstance(t0, float):
            t1 = time.perf_counter()
            self._wait_s[name] = self._wait_s.get(name, 0.0) + t1 - t0
            if self.trace is not None:
                self.trace.append((name, kind, int(nbytes), t0, t1))
            return
        end = torch.cuda.Event(enable_timing=True)
        end.record()  # the stream t0 was recorded on: the current one, as at the start
        self._pending.append((name, t0, end))
        self._settle(block=False)

    def _settle(self, block: bool) -> None:
        """Move the finished events' times into ``_wait_s`` (all of them when ``block``)."""
        while self._pending and (block or self._pending[0][2].query()):
            name, start, end = self._pending.pop(0)
            if block:
                end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
            self._wait_s[name] = self._wait_s.get(name, 0.0) + seconds


def set_timeout(groups, seconds: float) -> None:
    """Give every distinct process group among ``groups`` (TowerGroups; one-rank groups have
    none) a timeout of ``seconds`` for the operations started from now on.

    NCCL applies it to every later operation; gloo to its collectives, while a point-to-point
    receive keeps the timeout the group was created with (measured with torch 2.14).
    """
    seen = set()
    for g in groups:
        pg = g.group if g.group is not None else dist.group.WORLD
        if g.size == 1 or g.group is LOOPBACK or id(pg) in seen:
            continue
        seen.add(id(pg))
        _set_timeout(timedelta(seconds=seconds), pg)


# public from torch 2.14 (dist.set_timeout); the older name warns there
_set_timeout = getattr(dist, "set_timeout", None) or dist.distributed_c10d._set_pg_timeout


def single() -> TowerGroup:
    """A group of one rank: every exchange is the identity and counts zero bytes."""
    return TowerGroup()


def loopback_pair() -> TowerGroup:
    """Tower 0 of a pair whose other tower is this process's own (:mod:`.loopback`)."""
    return TowerGroup(group=LOOPBACK, rank=0, size=2)


def world() -> TowerGroup:
    """The default process group as a tower group (:func:`single` when not initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return single()
    return TowerGroup(dist.group.WORLD, dist.get_rank(), dist.get_world_size())


def broadcast(tensor: torch.Tensor, group: TowerGroup, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with tower ``src``'s and return it."""
    if group.size > 1:
        _check_dense(tensor)
        ops(group.group).broadcast(tensor, src=group.global_rank(src), group=group.group)
    return tensor


def all_reduce_sum(tensor: torch.Tensor, group: TowerGroup) -> torch.Tensor:
    """Sum ``tensor`` over the towers, in place; returns it."""
    if group.size > 1:
        _check_dense(tensor)
        ops(group.group).all_reduce(tensor, op=dist.ReduceOp.SUM, group=group.group)
    return tensor


@torch.no_grad()
def all_gather_cat(tensor: torch.Tensor, group: TowerGroup, dim: int) -> torch.Tensor:
    """Every tower's ``tensor`` (same shape on all) concatenated along ``dim`` in rank order."""
    if group.size == 1:
        return tensor
    tensor = tensor.detach().contiguous()
    parts = [torch.empty_like(tensor) for _ in range(group.size)]
    ops(group.group).all_gather(parts, tensor, group=group.group)
    return torch.cat(parts, dim=dim)


def broadcast_object(obj: Any, group: TowerGroup, src: int = 0) -> Any:
    """Tower ``src``'s picklable ``obj``, on every rank."""
    if group.size == 1:
        return obj
    box = [obj if group.rank == src else None]
    ops(group.group).broadcast_object_list(box, src=group.global_rank(src), group=group.group)
    return box[0]


def barrier(group: TowerGroup) -> None:
    """Wait until every tower reaches this point."""
    if group.size > 1:
        ops(group.group).barrier(group=group.group)


def _check_dense(t: torch.Tensor) -> None:
    """In-place collectives need a contiguous tensor (NCCL refuses others; a copy would lose
    the result); the callers' tensors are, and this says so if one ever is not."""
    if not t.is_contiguous():
        raise ValueError(f"a collective got a non-contiguous tensor {tuple(t.shape)}")
