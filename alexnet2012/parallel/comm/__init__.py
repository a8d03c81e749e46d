"""Every exchange between the two towers: the only package that calls torch.distributed collectives.

A :class:`TowerGroup` is the set of ranks that hold one AlexNet2012 tower each (rank r holds
channels ``[r*C/size, (r+1)*C/size)`` of every activation). The three exchanges of the 2012 net
are autograd pairs, each "forward: X, backward: Y" (Megatron's ``tensor_parallel/mappings.py``):

* :func:`gather_towers`: a cross layer (conv3, fc6, fc7) reads both towers ([P] §3.5).
* :func:`gather_to_head`: fc8 and the softmax live on one rank ([C12], ref §1).
* :func:`sum_partials`: fc8 split by input halves, partial logits summed.

All are built on public ``torch.distributed`` calls (``torch.distributed.nn.functional`` is
deprecated, ``_functional_collectives`` private; docs/parallel.md) and are the identity on a
group of one rank. Their counters are kept apart from their arithmetic (:mod:`.meter`): a
:class:`Meter` around each call counts the bytes this rank sends and the time it held the rank
up (host time on the CPU, CUDA events on a GPU), under the exchange's name, forward and
backward together.
"""

from alexnet2012.parallel.comm.exchanges import (
    gather_to_head,
    gather_towers,
    gathered_stand_in,
    sum_partials,
)
from alexnet2012.parallel.comm.group import (
    TowerGroup,
    all_gather_cat,
    all_reduce_sum,
    barrier,
    broadcast,
    broadcast_object,
    loopback_pair,
    set_timeout,
    single,
    world,
)
from alexnet2012.parallel.comm.meter import Meter
from alexnet2012.parallel.comm.swap import Pending, swap_finish, swap_start

__all__ = [
    "Meter", "Pending", "TowerGroup", "all_gather_cat", "all_reduce_sum", "barrier", "broadcast",
    "broadcast_object", "gather_to_head", "gather_towers", "gathered_stand_in", "loopback_pair",
    "set_timeout", "single", "sum_partials", "swap_finish", "swap_start", "world",
]  # fmt: skip
