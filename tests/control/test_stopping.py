"""The ranks' vote to stop on a signal: both ranks stop at the same step, read at once on the
CPU and one period late when deferred (as on CUDA, where the step must not wait for the GPU)."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest
import torch
from spawn import run_ranks

from alexnet2012.control import stopping
from alexnet2012.parallel import comm


def _env(world_size: int) -> SimpleNamespace:
    return SimpleNamespace(world_size=world_size, device=torch.device("cpu"), world=comm.world())


def _first_stop(rank: int, deferred: bool, signalled_rank: int, at: int) -> int | None:
    """Poll steps 1..60; rank ``signalled_rank`` is signalled after step ``at``."""
    vote = stopping.StopVote(_env(2), every=10, deferred=deferred)
    stopping._STOP["signal"] = 0
    for step in range(1, 61):
        if rank == signalled_rank and step == at:
            stopping._STOP["signal"] = signal.SIGTERM
        if vote.poll(step):
            return step
    return None


def test_ranks_stop_together_at_once_and_deferred(tmp_path):
    for deferred, expected in ((False, 20), (True, 30)):
        for who in (0, 1):
            stops = run_ranks(_first_stop, 2, tmp_path, args=(deferred, who, 13))
            assert stops == [expected, expected], (deferred, who, stops)


def _unsignalled(rank: int) -> list[bool]:
    vote = stopping.StopVote(_env(2), every=5, deferred=True)
    stopping._STOP["signal"] = 0
    return [vote.poll(s) for s in range(1, 31)] + [vote.now()]


def test_no_signal_never_stops(tmp_path):
    assert run_ranks(_unsignalled, 2, tmp_path) == [[False] * 31] * 2


def test_one_process_reads_its_own_flag():
    vote = stopping.StopVote(_env(1), every=10, deferred=True)
    stopping._STOP["signal"] = 0
    assert not vote.poll(7) and not vote.now()
    stopping._STOP["signal"] = signal.SIGINT
    try:
        assert vote.poll(7) and vote.now()  # one process: no agreement to wait for
    finally:
        stopping._STOP["signal"] = 0


def test_defaults_to_deferred_only_on_cuda():
    assert not stopping.StopVote(_env(2)).deferred
    cuda = SimpleNamespace(world_size=2, device=torch.device("cuda", 0), world=None)
    assert stopping.StopVote(cuda).deferred


def test_repeated_sigterm_is_one_request_a_second_sigint_stops_at_once():
    """Under Slurm a worker gets SIGTERM from Slurm and again from torchrun: the same request,
    which never cuts the save short. Ctrl-C pressed again stops at once. After a stop, SIGTERM
    stays ignored, so a late copy cannot kill the process before it exits with its status."""
    before = signal.getsignal(signal.SIGTERM)
    try:
        with stopping.stop_on_signals():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)  # no KeyboardInterrupt
            signal.raise_signal(signal.SIGTERM)
            assert stopping.signalled()
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        if before is signal.SIG_DFL:
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        with stopping.stop_on_signals():
            signal.raise_signal(signal.SIGINT)  # Ctrl-C first, then SIGTERM: one request
            signal.raise_signal(signal.SIGTERM)
            assert stopping._STOP["signal"] == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        signal.signal(signal.SIGTERM, before)
        with stopping.stop_on_signals():  # no signal: the handlers come back unchanged
            assert not stopping.signalled()
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        signal.signal(signal.SIGTERM, before)
        stopping._STOP["signal"] = 0
