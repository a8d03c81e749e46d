"""Shared machinery of the fault-injection tests (:mod:`test_faults`): the run to disturb, the
launcher of a training subprocess (under torchrun if asked), checks that a recovered run equals an
undisturbed one, and the tally of faults printed at the end.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from alexnet2012.config import load_config
from alexnet2012.training import checkpoint, loop

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")
BASE = [
    "data.name=synthetic", "data.synthetic_size=256", "data.train_subset=0", "data.test_subset=0",
    "train.batch_size=16", "train.epochs=2", "train.max_steps=24", "train.log_every=1",
    "train.checkpoint_every=5", "train.device=cpu", "wandb.mode=disabled", "parallel.timeout_s=20",
]  # fmt: skip
SAVES = (5, 10, 15, 16, 20, 24)  # every 5 steps, the epoch end (16 steps an epoch), the last
SEED = 2012
TIMEOUT = 150  # seconds a subprocess may take
TALLY = {"faults injected": 0, "runs recovered": 0, "steps lost": 0, "files corrupted": 0}
ROWS: list[tuple[str, str, str]] = []  # (fault, outcome, steps lost)


def record(fault: str, outcome: str, lost: int | None = None) -> None:
    TALLY["faults injected"] += 1
    if lost is not None:
        TALLY["runs recovered"] += 1
        TALLY["steps lost"] += lost
    ROWS.append((fault, outcome, "-" if lost is None else str(lost)))


def table() -> str:
    w = max([len(f) for f, _, _ in ROWS] + [24])
    lines = [f"fault injection (seed {SEED})", *(f"  {k:<16} {v}" for k, v in TALLY.items()),
             f"  {'fault':<{w}}  {'steps lost':>10}  outcome",
             *(f"  {f:<{w}}  {lost:>10}  {out}" for f, out, lost in ROWS)]  # fmt: skip
    return "\n".join(lines) + "\n"


class TablePlugin:  # registered at run time: a test module cannot hold pytest hooks
    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_sep("=", "fault injection")
        terminalreporter.write(table())


def cfg_for(run_dir, *extra):
    return load_config(DEBUG, [*BASE, f"run.dir={run_dir}", *extra])


def resume(run_dir, *overrides):
    """What ``alexnet2012 train --resume RUN_DIR [overrides]`` does, in this process."""
    cfg = load_config(Path(run_dir) / "config.yaml", [*overrides, f"run.dir={run_dir}"])
    return loop.run(cfg, resume=True)


def start(
    run_dir, fault="", *extra, log: Path, torchrun=False, resume=False, **env
) -> subprocess.Popen:
    """``alexnet2012 train`` (under torchrun if asked; ``--resume RUN_DIR`` if ``resume``) in its
    own session, output to ``log``."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "--max-restarts=2"] if torchrun else []  # fmt: skip
    new = ["--config", DEBUG, *BASE, f"run.dir={run_dir}"]
    what = ["--resume", str(run_dir)] if resume else new
    runner = str(Path(__file__).with_name("faultrun.py"))  # the CLI with the fault hooks
    argv = [sys.executable, *launcher, runner, "train", *what, *extra]
    launch = r"^(ALEXNET2012_|TORCHELASTIC|MASTER_)|RANK$|WORLD_SIZE$"  # none of the caller's
    keep = {k: v for k, v in os.environ.items() if not re.search(launch, k)}
    env = {**keep, "OMP_NUM_THREADS": "1", "ALEXNET2012_NO_BAR": "1", "PYTHONPATH": str(ROOT),
           **({"ALEXNET2012_FAULT": fault} if fault else {}), **env}  # fmt: skip
    with open(log, "w") as out:  # the child keeps its own handle
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the session this test started, torchrun's workers too
    proc.wait(timeout=30)


def run_all(procs: list) -> list[int]:
    """Wait for processes started together; their return codes."""
    deadline = time.monotonic() + TIMEOUT
    try:
        return [p.wait(timeout=max(1, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            stop(p)


def verify(run_dir) -> list[int]:
    """Steps of the checkpoints in ``run_dir``, each loaded with finite weights; one that does
    not load is a file the fault corrupted (the tally's last line)."""
    steps = []
    for path in checkpoint.checkpoints(run_dir):
        try:
            payload = checkpoint.load(path)
        except checkpoint.CheckpointError:
            TALLY["files corrupted"] += 1
            raise
        assert all(torch.isfinite(v).all() for v in payload["model"].values()), path
        steps.append(payload["step"])
    return steps


def history(run_dir) -> dict:
    """Per step: the training loss, and the validation numbers where there are some."""
    rows = [json.loads(line) for line in open(Path(run_dir) / "metrics.jsonl")]
    steps = [r["step"] for r in rows if "train/loss" in r]
    assert steps == sorted(set(steps)), "metrics.jsonl repeats or reorders steps"
    keep = ("train/loss", "val/loss", "val/top1_err", "val/top5_err")
    return {(r["step"], k): r[k] for r in rows for k in keep if k in r}


def assert_same_run(run_dir, base_dir) -> None:
    """Exactly the numbers of the undisturbed run: every step's loss and the final metrics."""
    got, want = (json.loads((Path(d) / "summary.json").read_text()) for d in (run_dir, base_dir))
    final = ("steps", "test/loss", "test/top1_err", "test/top5_err", "best_val_top1_err",
             "final_val_loss", "final_lr")  # fmt: skip
    assert {k: got[k] for k in final} == {k: want[k] for k in final}
    assert history(run_dir) == history(base_dir)


def before(step: int) -> int:
    """The newest checkpoint an unbroken run has written before finishing ``step``."""
    return max([s for s in SAVES if s < step], default=0)
