"""A tower pair in one process, for measuring one rank's share of the split net on one device.

:func:`.group.loopback_pair` is a :class:`TowerGroup` of two towers whose process group is
:data:`LOOPBACK`: this process is tower 0 and no peer exists. Every collective an exchange
makes does the local memory work of its size instead (the peer's tower taken to be this
one's): an all-gather copies this tower's shard into both slots, a reduce-scatter sums two
chunks, a send copies the tensor, a receive writes the buffer. The exchanges count their bytes
and time as on two ranks (:meth:`TowerGroup.count`), so ``bench``'s ``rank_share`` execution
measures one rank's compute and the bytes each exchange would move, from which it projects two
devices (bench/project.py). Point-to-point batches (``parallel.overlap``) are not emulated.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

ReduceOp = dist.ReduceOp


class _Loopback:
    """The process group of :func:`pair` (a marker: nothing is connected)."""

    def __repr__(self) -> str:
        return "LOOPBACK"


LOOPBACK = _Loopback()


class _Done:
    """What an asynchronous call returns: already complete."""

    def wait(self) -> bool:
        return True


def ops(group):
    """The collectives for ``group`` (a ProcessGroup, None or :data:`LOOPBACK`): this module's
    stand-ins for the loopback pair, else ``torch.distributed``."""
    import sys

    return sys.modules[__name__] if group is LOOPBACK else dist


def get_global_rank(group, group_rank: int) -> int:
    return group_rank


def all_gather_into_tensor(out: torch.Tensor, x: torch.Tensor, group=None) -> _Done:
    for part in out.view(-1, *x.shape).unbind(0):  # each tower's slot gets the shard
        part.copy_(x)
    return _Done()


def reduce_scatter_tensor(out: torch.Tensor, parts: torch.Tensor, op=None, group=None) -> _Done:
    chunks = parts.view(-1, *out.shape)
    out.copy_(chunks[0])
    for c in chunks[1:]:  # the other towers' partial sums of this tower's slice
        out.add_(c)
    return _Done()


all_gather_single, reduce_scatter_single = all_gather_into_tensor, reduce_scatter_tensor


def send(t: torch.Tensor, dst: int = 0, group=None) -> None:
    torch.empty_like(t).copy_(t)  # the bytes leave this tower's memory


def recv(t: torch.Tensor, src: int = 0, group=None) -> None:
    t.zero_()  # the bytes arrive: one write of the buffer


def isend(t: torch.Tensor, dst: int = 0, group=None) -> _Done:
    send(t)
    return _Done()


def irecv(t: torch.Tensor, src: int = 0, group=None) -> _Done:
    recv(t)
    return _Done()


def all_reduce(t: torch.Tensor, op=None, group=None) -> _Done:
    t.add_(t.clone())  # the peer's partial received, then summed
    return _Done()


def broadcast(t: torch.Tensor, src: int = 0, group=None) -> None:
    return None  # this process is the source


def all_gather(parts: list, t: torch.Tensor, group=None) -> None:
    for p in parts:
        p.copy_(t)


def broadcast_object_list(box: list, src: int = 0, group=None) -> None:
    return None


def barrier(group=None) -> None:
    return None
