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

from alexnet2012.parallel import comm
from alexnet2012.parallel.comm.bare import KINDS, bare_exchange

__all__ = ["KINDS", "exchange_seconds"]


def exchange_seconds(g: comm.TowerGroup, kind: str, nbytes: int, repeats: int = 50) -> dict:
    """One ``kind`` exchange of ``nbytes`` per rank (fp32), both ranks starting together,
    ``repeats`` times: {"median", "mean", "p99", "over_1ms"} (seconds; the share of calls over
    1 ms). Every rank of ``g`` must call it with the same arguments."""
    call = bare_exchange(kind, torch.zeros(max(1, nbytes // 4)), g)
    call()  # first call: connections
    enter, leave = torch.zeros(repeats, dtype=torch.float64), []
    for i in range(repeats):
        comm.barrier(g)
        enter[i] = time.perf_counter()
        call()
        leave.append(time.perf_counter())
    last = comm.all_gather_cat(enter, g, 0).view(g.size, repeats).amax(0)
    times = sorted(t - float(e) for t, e in zip(leave, last, strict=True))
    return {
        "median": statistics.median(times),
        "mean": statistics.fmean(times),
        "p99": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
        "over_1ms": sum(t > 1e-3 for t in times) / len(times),
    }
