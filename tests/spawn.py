"""Run a test function on several gloo CPU ranks and collect what each returns.

``run_ranks(fn, 2, tmp_path)`` spawns two processes (start method "spawn"), joins them into a
gloo group through a ``file://`` store under ``tmp_path`` (no ports), calls ``fn(rank, *args)``
on each and returns their results in rank order. Results travel as pickle files with every
tensor turned into a numpy array. ``fn`` must be a module-level function (it is pickled).
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the package is not installed; spawned ranks inherit sys.path
    sys.path.insert(0, str(ROOT))


def to_plain(obj: Any) -> Any:
    """Tensors -> numpy arrays, recursively through dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def _rank_main(rank: int, fn: Callable, world_size: int, work: str, args: tuple) -> None:
    """One spawned rank: join the group, run ``fn``, write its result or its traceback."""
    import torch.distributed as dist

    from alexnet2012.control import torchrun

    torch.set_num_threads(1)  # two ranks on two cores: one thread each (parallel.md)
    out = Path(work)
    try:
        torchrun.init_for_test(rank, world_size, str(out / "store"))
        result = to_plain(fn(rank, *args))
        with open(out / f"rank{rank}.pkl", "wb") as f:
            pickle.dump(result, f)
        dist.barrier()  # nobody closes its connections while a peer still reads
    except BaseException:
        (out / f"rank{rank}.err").write_text(traceback.format_exc())
        raise
    torchrun.teardown()
    # leave as the CLI's workers do (alexnet2012.cli.run_and_exit): after a clean teardown, the
    # interpreter's own exit can race gloo's background threads into SIGABRT
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _failure_text(work: Path, fallback: str) -> str:
    errs = sorted(work.glob("rank*.err"), key=lambda p: p.stat().st_mtime)  # first failure first
    return "\n".join(f"--- {p.stem}:\n{p.read_text()}" for p in errs) or fallback


def run_ranks(
    fn: Callable,
    world_size: int = 2,
    tmp_path: Path | str | None = None,
    args: tuple = (),
    timeout: float = 120.0,
) -> list[Any]:
    """``[fn(0, *args), fn(1, *args), ...]`` computed on ``world_size`` spawned gloo ranks.

    Raises AssertionError with the failing ranks' tracebacks if any rank raises, or if the ranks
    are not done within ``timeout`` seconds (the survivors are killed either way).
    """
    base = Path(tmp_path) if tmp_path is not None else Path(tempfile.mkdtemp())
    work = base / f"ranks-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    ctx = mp.start_processes(
        _rank_main,
        args=(fn, world_size, str(work), tuple(args)),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=max(0.05, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                for p in ctx.processes:
                    if p.is_alive():
                        p.kill()
                raise AssertionError(f"ranks still running after {timeout} s (a hang?)")
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
        raise AssertionError(_failure_text(work, str(e))) from None
    return [pickle.loads((work / f"rank{r}.pkl").read_bytes()) for r in range(world_size)]
