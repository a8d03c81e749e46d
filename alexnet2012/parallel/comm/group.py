"""Tower groups and the plain collectives (no autograd, not counted): broadcasts, sums,
gathers and barriers that the trainer, checkpoints and metrics use."""

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
