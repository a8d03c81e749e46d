"""The exchanges' bookkeeping, kept out of their arithmetic: a :class:`Meter` wraps each call an
exchange makes (a collective, a send, a wait) and adds it to its group's counters.

What a call counts is :class:`~.group.TowerGroup`'s: the bytes this rank hands to the call (the
logical volume), one call, and the time the call holds the rank up from the mark taken on entry
(host time on the CPU, CUDA events on a GPU: :meth:`~.group.TowerGroup.clock`); on the CPU with
a trace, one (name, kind, bytes, entry, exit) entry. ``bench --exchanges`` and the tests read them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from alexnet2012.parallel.comm.group import TowerGroup


class Meter:
    """The counters of exchange ``name`` on ``group``; without a name it counts nothing (the
    exchanges' bare arithmetic and collectives, as the tests run them)."""

    def __init__(self, group: TowerGroup, name: str | None = None):
        self.group, self.name = group, name

    @contextmanager
    def __call__(self, kind: str, t: torch.Tensor, nbytes: int = 0) -> Iterator[None]:
        """Count the body as one call of kind ``kind`` (:data:`.bare.KINDS`, or "" for the
        swap's) that sends ``nbytes``; ``t``: a tensor on the device the call runs on."""
        if self.name is None:
            yield
            return
        t0 = self.group.clock(t)
        yield
        self.group.count(self.name, nbytes, t0, kind)


def nbytes(t: torch.Tensor) -> int:
    """The bytes of ``t``'s elements."""
    return t.numel() * t.element_size()
