"""``alexnet2012`` with the fault-injection hooks of :mod:`faults` installed (tests only):

ALEXNET2012_FAULT=kill@step=7 python tests/faultrun.py train --config configs/debug.yaml
python -m torch.distributed.run --nproc_per_node=2 tests/faultrun.py train ...
"""

import faults

from alexnet2012.cli import run_and_exit

if __name__ == "__main__":
    faults.install()
    run_and_exit()
