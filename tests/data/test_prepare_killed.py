"""prepare's decoding workers leave quietly when prepare is killed mid-run: no BrokenPipeError
traceback per worker, no orphan that decodes on."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SLOW_POOL = """
import time, numpy as np
from alexnet2012.data.workers import Decoders
def load(loc):
    time.sleep(0.2)
    return np.zeros((8, 8, 3), np.uint8), ()
d = Decoders(2, 64, 8)
print("started", flush=True)
for r in d.map(load, list(range(64)), 0):
    pass
"""


def test_workers_leave_quietly_when_prepare_is_killed():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-c", SLOW_POOL], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert p.stdout.readline().strip() == "started"
    time.sleep(0.5)  # both workers inside a task
    p.send_signal(signal.SIGKILL)
    _, err = p.communicate(timeout=30)  # returns once the workers, holding stderr, are gone
    assert "Traceback" not in err and "BrokenPipeError" not in err, err[-2000:]
