"""What one exchange costs by itself: the collective or send/receive of a training step's
exchange, started by both ranks together, timed alone (``bench --exchanges``).

Before each call the ranks meet at a barrier, and the call is timed from the later rank's
entry to this rank's exit (the ranks share one host clock), so the barrier's exit skew is not
counted: the time is the call's latency and transfer, with no waiting for a slower peer; at 4
bytes it is the latency alone. Set against the same call inside a step, where the peer may
arrive late, this splits an exchange's time into the call's own cost and waiting.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.distributed as dist

from alexnet2012.parallel.comm.exchanges import _all_gather_single, _reduce_scatter_single
from alexnet2012.parallel.comm.group import TowerGroup, all_gather_cat, barrier

# the calls of comm.exchanges: gather_towers forward and backward, gather_to_head forward
# (to the head) and backward (from it), sum_partials forward
KINDS = ("all_gather", "reduce_scatter", "to_head", "from_head", "all_reduce")


def _exchange(kind: str, x: torch.Tensor, g: TowerGroup, head: int = 0):
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


def exchange_seconds(g: TowerGroup, kind: str, nbytes: int, repeats: int = 50) -> dict:
    """One ``kind`` exchange of ``nbytes`` per rank (fp32), both ranks starting together,
    ``repeats`` times: {"median", "mean", "p99", "over_1ms"} (seconds; the share of calls over
    1 ms). Every rank of ``g`` must call it with the same arguments."""
    call = _exchange(kind, torch.zeros(max(1, nbytes // 4)), g)
    call()  # first call: connections
    enter, leave = torch.zeros(repeats, dtype=torch.float64), []
    for i in range(repeats):
        barrier(g)
        enter[i] = time.perf_counter()
        call()
        leave.append(time.perf_counter())
    last = all_gather_cat(enter, g, 0).view(g.size, repeats).amax(0)
    times = sorted(t - float(e) for t, e in zip(leave, last, strict=True))
    return {
        "median": statistics.median(times),
        "mean": statistics.fmean(times),
        "p99": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
        "over_1ms": sum(t > 1e-3 for t in times) / len(times),
    }
