"""One exchange's collective or send/receive by itself, with no autograd and no counters: what
``bench --exchanges`` times alone (:mod:`alexnet2012.bench.probe`) to split an exchange's time
in a step into the call's own cost and waiting for the peer."""

from __future__ import annotations

import torch
import torch.distributed as dist

from alexnet2012.parallel.comm.exchanges import _all_gather_single, _reduce_scatter_single
from alexnet2012.parallel.comm.group import TowerGroup

# the calls of the exchanges: gather_towers forward and backward, gather_to_head forward
# (to the head) and backward (from it), sum_partials forward
KINDS = ("all_gather", "reduce_scatter", "to_head", "from_head", "all_reduce")


def bare_exchange(kind: str, x: torch.Tensor, g: TowerGroup, head: int = 0):
    """A function making one ``kind`` exchange of ``x`` (this rank's part), its buffers made
    here, outside the timed calls, as the real exchanges make theirs before their clock starts."""
    if kind == "all_gather":
        out = x.new_empty((g.size * x.shape[0],))
        return lambda: _all_gather_single(out, x, group=g.group)
    if kind == "reduce_scatter":
        out, parts = x.new_empty((x.shape[0],)), x.repeat(g.size)
        return lambda: _reduce_scatter_single(out, parts, op=dist.ReduceOp.SUM, group=g.group)
    if kind == "all_reduce":
        return lambda: dist.all_reduce(x, op=dist.ReduceOp.SUM, group=g.group)
    if kind in ("to_head", "from_head"):
        op = dist.isend if (g.rank != head) == (kind == "to_head") else dist.irecv
        peers = [r for r in range(g.size) if r != head] if g.rank == head else [head]

        def p2p():
            for w in [op(x, g.global_rank(r), group=g.group) for r in peers]:
                w.wait()

        return p2p
    raise ValueError(f"exchange kind {kind!r} is not one of {', '.join(KINDS)}")
