"""alexnet2012.control.launcher: torchrun that ends a SIGTERM with status 130 and one line, waits
for its workers through repeated SIGTERMs, and ends a worker's failure with that worker's status;
never its own traceback. The workers here are small scripts; launch/slurm_selftest.sh runs the
real training under Slurm."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = """
import os, signal, sys, time
from pathlib import Path
out, rank, got = Path(sys.argv[1]), os.environ["RANK"], []
signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
if sys.argv[2] == "fail":
    sys.exit(2 if rank == "1" else 0)
(out / f"ready{rank}").write_text(str(os.getpid()))
while not got:
    time.sleep(0.05)
time.sleep(2)  # a checkpoint being written
(out / f"saved{rank}").write_text(str(len(got)))
sys.exit(130)
"""


def _launch(tmp_path, mode):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    launch = r"^(TORCHELASTIC|MASTER_|SLURM_)|RANK$|WORLD_SIZE$"
    env = {k: v for k, v in os.environ.items() if not re.search(launch, k)}
    env.update(PYTHONPATH=str(ROOT), TORCH_ELASTIC_SHUTDOWN_TIMEOUT="60")
    argv = [sys.executable, "-m", "alexnet2012.control.launcher", "--standalone",
            "--nproc_per_node=2", "--max-restarts=0", str(script), str(tmp_path), mode]  # fmt: skip
    log = open(tmp_path / "launcher.log", "w")
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_sigterm_like_slurm_waits_for_the_save_and_ends_130(tmp_path):
    proc = _launch(tmp_path, "save")
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{r}").is_file() for r in (0, 1)):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.2)  # the pid is written just before the handler waits
        workers = [int((tmp_path / f"ready{r}").read_text()) for r in (0, 1)]
        for pid in (proc.pid, *workers):  # Slurm signals every process of the step
            os.kill(pid, signal.SIGTERM)
        for _ in range(3):  # and may signal again (the batch shell's forward, a preemption)
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = (tmp_path / "launcher.log").read_text()
    assert rc == 130 and "Traceback" not in out, out[-3000:]
    assert "torchrun: stopped by SIGTERM" in out
    for r in (0, 1):  # both saved: torchrun waited for them (signals that arrive together
        assert (tmp_path / f"saved{r}").is_file(), out[-3000:]  # merge: one or two per worker)


def test_a_failed_worker_ends_with_its_status_and_torchrun_report(tmp_path):
    proc = _launch(tmp_path, "fail")
    rc = proc.wait(timeout=120)
    out = (tmp_path / "launcher.log").read_text()
    assert rc == 2 and "Traceback" not in out, out[-3000:]
    assert "Root Cause" in out and "exitcode  : 2" in out, out[-3000:]
