"""Timing training steps and input pipelines: the measuring behind ``alexnet2012 bench``.

A :class:`Job` names one execution of one configured network; :func:`run_job` measures it in
fresh processes (one, or two ranks of a tower pair), so each process's peak resident set (CPU)
or peak allocation (CUDA) is its own. Each process times ``steps`` training steps after
``warmup`` on fixed random batches already on the device (no data loading in the timed loop),
and reads the bytes each exchange point sent from the :mod:`.comm` counters: the volumes are
measured, not computed (:mod:`.benchrows` turns them into report rows).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.multiprocessing as mp

from alexnet2012 import config
from alexnet2012.config import Config, ConfigError, init_for
from alexnet2012.control import torchrun
from alexnet2012.nets.build import input_size
from alexnet2012.parallel import comm
from alexnet2012.parallel.execution import build_execution
from alexnet2012.training.optim import build_optimizer
from alexnet2012.training.state import peak_memory
from alexnet2012.training.step import TrainStep

log = logging.getLogger(__name__)

# rank_share (one rank's share, for bench/project.py) runs only when asked for
DEFAULT_EXECUTIONS = ("two_ranks", "emulated", "streamlined", "torchvision")
EXECUTIONS = (*DEFAULT_EXECUTIONS, "rank_share")
SPLIT = ("two_ranks", "rank_share")  # the executions that split the net into towers


@dataclass
class Job:
    """One execution to time: the config (as a dict, for pickling) and what to run it as."""

    name: str  # the row's label, e.g. "two_ranks/rank0"
    execution: str  # one of EXECUTIONS
    cfg: dict
    classes: int
    channels: int
    steps: int
    warmup: int
    cuda: bool
    trace: bool = False  # two gloo ranks: time each exchange call (bench --exchanges)
    profile: int = 0  # steps to profile after the timed ones (bench --profile)

    @property
    def world_size(self) -> int:
        return 2 if self.execution == "two_ranks" else 1


def config_for(cfg: Config, execution: str, fc8: str | None = None) -> Config:
    """``cfg`` with the network ``execution`` runs: the two-tower net or a baseline."""
    name = "alexnet2012" if execution in (*SPLIT, "emulated") else execution
    init = cfg.model.init
    try:
        init_for(name, init)
    except ConfigError:  # the baselines' inits do not apply to the two-tower net
        init = "preset"
    model = dataclasses.replace(cfg.model, name=name, init=init)
    parallel = dataclasses.replace(cfg.parallel, fc8=fc8 or cfg.parallel.fc8)
    if execution == "rank_share":  # the loopback pair has no overlapped swaps (comm/loopback.py)
        parallel = dataclasses.replace(parallel, overlap=False)
    return dataclasses.replace(cfg, model=model, parallel=parallel)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fixed_batches(cfg: Config, job: Job, device: torch.device, count: int = 2) -> list:
    """``count`` random (x, y) batches on ``device``, the same on every rank (one seed)."""
    g = torch.Generator().manual_seed(cfg.seed)
    size, n = input_size(cfg), cfg.train.batch_size
    out = []
    for _ in range(count):
        x = torch.randn(n, job.channels, size, size, generator=g).to(device)
        out.append((x, torch.randint(0, job.classes, (n,), generator=g).to(device)))
    return out


def measure(job: Job, env: torchrun.Env) -> dict:
    """Time ``job`` on this process's share of the network; this rank's raw figures."""
    cfg, dev = config.from_dict(job.cfg), env.device
    if job.execution == "rank_share":  # tower 0 of a pair whose exchanges stay in this process
        env = dataclasses.replace(env, group=comm.loopback_pair())
    at_start = peak_memory(dev)  # CPU: the interpreter and torch alone, before the network
    torch.manual_seed(cfg.seed)
    ex, forward = build_execution(cfg, env, job.classes, job.channels)  # as training runs it
    opt = build_optimizer(ex.named_parameters(), cfg.train)
    batches = fixed_batches(cfg, job, dev)
    train_step = TrainStep(cfg, ex, forward, opt, env.rank)  # the step training runs

    def step(i: int) -> None:
        train_step(*batches[i % len(batches)], i)

    ex.model.train()
    for i in range(job.warmup):
        step(i)
    _sync(dev)
    comm.barrier(env.group)  # both ranks start the clock together
    env.group.reset_counters()
    # the overlapped path's swaps post and wait in separate calls: no per-call split for them
    tracing = job.trace and env.group.size > 1 and dev.type == "cpu" and not ex.overlap
    env.group.trace = [] if tracing else None
    times = []
    for i in range(job.steps):
        t0 = time.perf_counter()
        step(job.warmup + i)
        _sync(dev)
        times.append(time.perf_counter() - t0)
    calls = exchange_calls(env.group, job.steps) if tracing else None
    top = None
    if job.profile:  # after the counters are read: the profiled steps are not counted
        from alexnet2012.bench.profile import profile_steps

        first = job.warmup + job.steps
        top = profile_steps(step, first, job.profile, dev.type == "cuda", lambda: _sync(dev))
    state = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return {
        "rank": env.rank,
        "device": str(dev),
        "backend": env.backend,
        "threads": torch.get_num_threads(),
        "overlapped": ex.overlap and ex.group.size > 1,  # what ran, not what was asked
        "step_s": times,
        "wait_s": sum(env.group.wait_s.values()),
        "bytes_by_point": {k: v / job.steps for k, v in env.group.bytes_sent.items()},
        "calls_by_point": {k: v / job.steps for k, v in env.group.calls.items()},
        "exchange_s_by_point": {k: v / job.steps for k, v in env.group.wait_s.items()},
        "param_bytes": ex.param_bytes(),
        "optimizer_bytes": sum(t.numel() * t.element_size() for t in state),
        "peak_memory": peak_memory(dev),
        "memory_at_start": at_start,
        "exchange_calls": calls,
        "profile": top,
    }


def exchange_calls(g: comm.TowerGroup, steps: int) -> list[dict]:
    """The traced exchange calls of ``steps`` steps, one entry per call of a step (host clock
    at entry and exit in each step), each with the time the same call takes alone
    (:func:`.probe.exchange_seconds`: at its size, and at 4 bytes: the latency)."""
    from alexnet2012.bench.probe import exchange_seconds

    trace, g.trace = g.trace, None
    per_step = len(trace) // steps
    if per_step * steps != len(trace) or any(
        trace[i][:2] != trace[i % per_step][:2] for i in range(len(trace))
    ):
        raise RuntimeError(f"the steps made different exchange calls: {len(trace)} in {steps}")
    sizes = torch.tensor([t[2] for t in trace[:per_step]])  # the sender's count on each call
    sizes = comm.all_gather_cat(sizes, g, 0).view(g.size, -1).amax(0).tolist()
    alone: dict = {}
    calls = []
    for k, (name, kind, *_rest) in enumerate(trace[:per_step]):
        for nbytes, repeats in ((sizes[k], 50), (4, 200)):
            if (kind, nbytes) not in alone:
                alone[kind, nbytes] = exchange_seconds(g, kind, nbytes, repeats)
        calls.append({
            "name": name, "kind": kind, "bytes": sizes[k],
            "enter": [t[3] for t in trace[k::per_step]], "exit": [t[4] for t in trace[k::per_step]],
            "alone_s": alone[kind, sizes[k]], "latency_s": alone[kind, 4],
        })  # fmt: skip
    return calls


def _process_main(rank: int, job: Job, work: str, port: int) -> None:
    """A spawned process: join the pair (two ranks) or run alone, measure, write rank<r>.json."""
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        os.environ.pop(key, None)
    if job.world_size > 1:  # what torchrun would set (docs/parallel.md)
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
        os.environ.update(LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    else:
        torch.set_num_threads(os.cpu_count() or 1)  # one process: every core
    cfg = config.from_dict(job.cfg)
    with torchrun.session(cfg.parallel.timeout_s, "cuda" if job.cuda else "cpu") as env:
        result = measure(job, env)  # gloo ranks get cpu_count // 2 threads each in setup
        (Path(work) / f"rank{rank}.json").write_text(json.dumps(result))
        comm.barrier(env.group)  # nobody closes while a peer still reads


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(job: Job) -> list[dict]:
    """Each rank's :func:`measure` figures, from fresh spawned processes."""
    log.info("bench %s: %d warm-up + %d timed steps", job.name, job.warmup, job.steps)
    # a fork server imports torch once and forks every process from that clean state: each
    # starts with the same resident set as a freshly spawned one, seconds sooner
    mp.set_forkserver_preload(["alexnet2012.bench.measure", "torch._dynamo"])
    with tempfile.TemporaryDirectory(prefix="alexnet2012-bench-") as work:
        try:
            mp.start_processes(
                _process_main,
                args=(job, work, _free_port()),
                nprocs=job.world_size,
                join=True,
                start_method="forkserver",
            )
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
            raise RuntimeError(f"bench {job.name}: a process failed:\n{e}") from None
        return [
            json.loads((Path(work) / f"rank{r}.json").read_text()) for r in range(job.world_size)
        ]


def pipeline_rate(cfg: Config, device: torch.device, batches: int) -> dict:
    """Images per second ``cfg.data`` delivers as training batches on ``device`` (after one)."""
    from alexnet2012.data import build_data

    t0 = time.perf_counter()
    data = build_data(cfg, input_size(cfg), device)
    setup_s = time.perf_counter() - t0
    bs = cfg.train.batch_size

    def stream():
        for epoch in range(math.ceil((batches + 1) / max(data.steps_per_epoch(bs), 1)) + 1):
            yield from data.train_batches(epoch, bs, cfg.seed)

    it = stream()
    next(it)  # the first batch pays one-off costs (threads, kernels)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(batches):
        x, _y = next(it)
    _sync(device)
    elapsed = time.perf_counter() - t0
    return {"pipeline": data.name, "images_per_s": batches * bs / elapsed, "setup_s": setup_s,
            "batches": batches, "batch_shape": list(x.shape), "device": str(device)}  # fmt: skip
