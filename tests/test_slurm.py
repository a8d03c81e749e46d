"""launch/slurm.sbatch under a real Slurm: launch/slurm_selftest.sh starts a one-node cluster in a
temporary folder and checks training, `scancel -s TERM`, SIGTERM to the batch shell alone,
`scontrol requeue` (of a stopped and of a running job), the refusal of a new job in an old run
folder, and that the continued run ends with the numbers of an unbroken one (about two minutes on
two cores). Skipped, with the reason, where Slurm is not installed (Debian: slurm-wlm, munge;
launch/test.sh installs them when it runs as root) or the cluster cannot be started (not root).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SELFTEST = ROOT / "launch" / "slurm_selftest.sh"
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
NEEDS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel")


def test_batch_script_under_a_one_node_slurm_cluster():
    missing = [c for c in NEEDS if not shutil.which(c, path=SBIN)]
    if missing:
        pytest.skip(f"Slurm is not installed here (no {', '.join(missing)}): "
                    "apt-get install slurm-wlm munge, or run launch/test.sh as root")  # fmt: skip
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["bash", str(SELFTEST)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    out = proc.stdout + proc.stderr
    if proc.returncode == 77:
        pytest.skip(out.strip().splitlines()[-1])
    assert proc.returncode == 0, out[-8000:]
    print("\n".join(line for line in out.splitlines() if line.startswith("[")))
