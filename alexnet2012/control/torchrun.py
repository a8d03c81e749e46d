"""The distributed lifecycle: read torchrun's environment, start and stop the process group.

One process (no torchrun, or ``WORLD_SIZE=1``) needs no process group and gets
:func:`comm.single`. Two processes hold one tower each::

    torchrun --standalone --nproc_per_node=2 -m alexnet2012 train ...

NCCL when every local rank has its own GPU, otherwise gloo with the data on the host (NCCL
refuses two ranks on one GPU; docs/parallel.md); ``train.device=cuda`` with fewer GPUs than
local ranks is an error. A short ``timeout`` makes a dead or hung peer fail fast instead of
after gloo's default 30 minutes; under NCCL :mod:`.watchdog` says so (docs/failures.md).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from alexnet2012.control import watchdog
from alexnet2012.parallel import comm

log = logging.getLogger(__name__)

TORCHRUN = "torchrun --standalone --nproc_per_node=2 -m alexnet2012 train ..."
DEVICE_PREFS = ("auto", "cuda", "cpu")


class DistributedError(ValueError):
    """A launch the project cannot run (wrong world size, missing variables); says how to fix."""


class PeerError(RuntimeError):
    """The other rank died or stopped answering; this rank stops instead of waiting for it."""


# how gloo and NCCL word a dead or silent peer (gloo raises a plain RuntimeError)
_PEER_SIGNS = ("closed by peer", "reset by peer", "timed out", "broken pipe", "connection refused")


@dataclass
class Env:
    """Where this process stands: its rank, device, backend and tower group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str  # "nccl", "gloo", or "none" for one process
    group: comm.TowerGroup  # this rank's tower pair
    data: comm.TowerGroup = field(default_factory=comm.single)  # this tower's replicas
    world: comm.TowerGroup = field(default_factory=comm.single)  # every rank
    watch_stalls: bool = False  # a Watchdog turns a silent wait into PeerError's message (NCCL)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def check_world_size(world_size: int) -> None:
    """1 (one process), 2 (one tower pair) or 2k (k data-parallel replicas of the pair)."""
    if world_size == 1 or (world_size >= 2 and world_size % 2 == 0):
        return
    raise DistributedError(
        f"model parallelism needs 2 ranks per tower pair, but WORLD_SIZE={world_size}; "
        f"launch an even number of processes, e.g. `{TORCHRUN}`, or one without torchrun"
    )


def mesh_env(
    rank: int, world_size: int, local_rank: int, device, backend: str, timeout_s=60
) -> Env:
    """The Env of an initialised process group: a (data, tower) mesh of k x 2 ranks when there
    are several tower pairs (ranks 2i and 2i+1 form pair i; ranks t, t+2, ... are tower t's
    replicas), else the whole group is one pair. The groups get the run's short timeout."""
    world = comm.world()
    if world_size <= 2:
        return Env(rank, world_size, local_rank, device, backend, world, comm.single(), world)
    k = world_size // 2
    timeout = timedelta(seconds=watchdog.group_timeout(timeout_s, backend))
    pairs = [[2 * i, 2 * i + 1] for i in range(k)]  # the tower axis of the mesh
    replicas = [list(range(t, world_size, 2)) for t in range(2)]  # the data axis
    tower_pg, _ = dist.new_subgroups_by_enumeration(pairs, timeout=timeout)
    data_pg, _ = dist.new_subgroups_by_enumeration(replicas, timeout=timeout)
    tower = comm.TowerGroup(tower_pg, rank % 2, 2)
    data = comm.TowerGroup(data_pg, rank // 2, k)
    return Env(rank, world_size, local_rank, device, backend, tower, data, world)


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise DistributedError(f"{name} is not set; launch with `{TORCHRUN}`")
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"{name}={value!r} is not an integer") from None


def restart_count() -> int:
    """How many times ``torchrun --max-restarts`` has restarted this job (0: first attempt)."""
    return _env_int("TORCHELASTIC_RESTART_COUNT", 0)


def max_restarts() -> int:
    """How many restarts ``torchrun --max-restarts`` allows this job (0 outside torchrun)."""
    return _env_int("TORCHELASTIC_MAX_RESTARTS", 0)


def restartable_job() -> str:
    """Under ``torchrun --max-restarts=N>0``: torchrun's run id, which names one job in all its
    attempts ("" otherwise). torchrun's default id "none" names no job in particular, so it
    counts as no id: such a job is not resumed on a restart (give --rdzv-id or --standalone)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if max_restarts() <= 0 or run_id in ("", "none"):
        return ""
    return run_id


def _want_cuda(device_pref: str) -> bool:
    if device_pref not in DEVICE_PREFS:
        raise DistributedError(f"device {device_pref!r}: choose from {', '.join(DEVICE_PREFS)}")
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise DistributedError("device 'cuda' was asked for but CUDA is not available")
    return device_pref != "cpu" and torch.cuda.is_available()


def _attempt_store(rank: int, world_size: int, timeout_s: int):
    """torchrun's store with keys private to this restart; None outside torchrun (env://).

    torchrun (torch 2.14) shares its rendezvous store with the workers and keeps it across
    ``--max-restarts`` restarts, with no per-attempt key prefix; a restarted group then reads the
    killed group's addresses and fails with "Gloo connectFullMesh failed ... Connection refused".
    A prefix per attempt avoids that (tests/training/test_faults.py restarts under torchrun).
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:
        return None
    timeout = timedelta(seconds=timeout_s)
    store, _, _ = next(dist.rendezvous("env://", rank, world_size, timeout=timeout))
    return dist.PrefixStore(f"alexnet2012/attempt-{attempt}", store)


def setup(timeout_s: int, device_pref: str) -> Env:
    """Start this process's part of the run from torchrun's environment variables.

    Args:
        timeout_s: how long a collective may wait for a peer before failing.
        device_pref: ``auto`` (CUDA if present), ``cuda`` or ``cpu``.
    """
    cuda = _want_cuda(device_pref)
    world_size = _env_int("WORLD_SIZE", 1)
    check_world_size(world_size)
    if world_size == 1 or "RANK" not in os.environ:
        device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        return Env(0, 1, 0, device, "none", comm.single())

    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world_size)
    if not os.environ.get("MASTER_ADDR"):
        raise DistributedError(f"MASTER_ADDR is not set; launch with `{TORCHRUN}`")
    _env_int("MASTER_PORT")
    if cuda and torch.cuda.device_count() < local_world:
        if device_pref == "cuda":  # asked for: never a silent fall back to the CPU
            raise DistributedError(
                f"train.device=cuda needs a GPU for every local rank, but this node runs "
                f"{local_world} ranks (LOCAL_WORLD_SIZE) and sees {torch.cuda.device_count()} "
                f"GPU(s) (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
                f"; launch --nproc_per_node={torch.cuda.device_count()} or fewer, or set "
                "train.device=auto (gloo on the CPU)"
            )
        log.warning(
            "%d local ranks but %d GPU(s): NCCL needs one GPU per rank, using gloo on the CPU",
            local_world,
            torch.cuda.device_count(),
        )
        cuda = False
    if cuda:
        backend, device = "nccl", torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        backend, device = "gloo", torch.device("cpu")
        if local_world > 1:  # the ranks share the cores: give each its part (parallel.md)
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    try:
        dist.init_process_group(
            backend,
            store=_attempt_store(rank, world_size, timeout_s),
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=watchdog.group_timeout(timeout_s, backend)),
            device_id=device if cuda else None,
        )
    except RuntimeError as e:  # the other rank never came, or died while joining
        if not _lost_peer(e):
            raise
        raise PeerError(
            f"rank {rank}: could not join the other rank ({_gist(e)}; parallel.timeout_s="
            f"{timeout_s}); start both ranks together, e.g. with `{TORCHRUN}`"
        ) from e
    env = mesh_env(rank, world_size, local_rank, device, backend, timeout_s)
    env.watch_stalls = backend == "nccl"  # gloo raises on its own (PeerError below)
    log.info("rank %d/%d on %s (%s), tower %d", rank, world_size, device, backend, env.group.rank)
    return env


def init_for_test(rank: int, world_size: int, init_file: str, timeout_s: int = 30) -> Env:
    """Gloo on the CPU through a ``file://`` store (no ports), for processes spawned by tests."""
    check_world_size(world_size)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )
    return mesh_env(rank, world_size, rank, torch.device("cpu"), "gloo", timeout_s)


def teardown() -> None:
    """Destroy the process group if there is one; safe to call twice or without one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _lost_peer(e: RuntimeError) -> bool:
    """Whether ``e`` says a peer is gone or silent (gloo raises plain RuntimeErrors)."""
    return isinstance(e, dist.DistError) or any(s in str(e).lower() for s in _PEER_SIGNS)


def _gist(e: Exception) -> str:
    """The heart of a gloo/NCCL error: "[.../pair.cc:561] Connection closed by peer [addr]:port.
    This is typically..." -> "Connection closed by peer [addr]:port"."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return re.sub(r"^\[[^\]]*:\d+\] ", "", first).split(". ")[0][:200]


@contextmanager
def peer_failures(env: Env, timeout_s: int, run_dir: str | os.PathLike = "") -> Iterator[None]:
    """Turn a collective that failed because a peer died or hung into :class:`PeerError`.

    A dead peer fails the next exchange at once ("Connection closed by peer"); a hung one fails
    it after ``timeout_s`` (``parallel.timeout_s``). The message says what happened and how to
    go on; the checkpoints already written are untouched. Under NCCL (``env.watch_stalls``) a
    wait for a lost peer raises nothing; a :class:`.watchdog.Watchdog` ends the process with
    the same message after ``timeout_s`` without a finished step.
    """

    def stalled(idle: float) -> str:
        what = f"no step finished for {idle:.0f} s: this or the other rank died or stopped"
        why = "under NCCL a wait for a lost peer raises no error"
        return _lost(env, timeout_s, run_dir, why, what)

    try:
        with watchdog.watching(timeout_s, stalled, env.watch_stalls and env.world_size > 1):
            yield
    except RuntimeError as e:
        if env.world_size == 1 or not _lost_peer(e):
            raise
        raise PeerError(_lost(env, timeout_s, run_dir, _gist(e))) from e


def _lost(env: Env, timeout_s, run_dir, why: str, what="the other rank died or stopped") -> str:
    """PeerError's message: which rank, why, and how to go on from the kept checkpoints."""
    run_dir = run_dir or "RUN_DIR"
    left = max_restarts() - restart_count()
    then = (
        f"torchrun restarts the job ({left} restart(s) left) and it resumes from there"
        if left > 0
        else f"continue with `{TORCHRUN.split(' train')[0]} train --resume {run_dir}`, or "
        "give torchrun --max-restarts=N to restart on its own"
    )
    return (
        f"rank {env.rank}: {what} answering ({why}; "
        f"parallel.timeout_s={timeout_s}). The checkpoints in {run_dir} are kept; {then}"
    )


@contextmanager
def session(timeout_s: int, device_pref: str) -> Iterator[Env]:
    """``with session(600, "auto") as env:`` runs the body and always tears the group down."""
    try:
        yield setup(timeout_s, device_pref)
    finally:
        teardown()
