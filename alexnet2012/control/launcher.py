"""torchrun that ends quietly on a signal, for batch schedulers (``launch/slurm.sbatch``)::

    python -m alexnet2012.control.launcher --nnodes=2 --nproc_per_node=8 ... -m alexnet2012 train

It takes torchrun's arguments and runs torchrun's own code. Two things differ when SIGTERM or
SIGINT reaches it. torchrun passes the signal to its workers, waits up to
``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` seconds for them and then raises ``SignalException``: a
traceback and status 1, though the workers agreed on a step, saved it and exited 130. Here that
ends in one line and status 130, the status of a run stopped by a signal (docs/failures.md).
And a repeated SIGTERM while the workers save is the same request: Slurm signals every process
of a job step, torchrun among them, and a preemption can deliver SIGTERM more than once; plain
torchrun would stop waiting for its workers at the second one and leave them to be killed.
When a worker fails (after the ``--max-restarts`` restarts), torchrun's failure report is
printed without the launcher's own traceback, and the status is the first failed rank's (2: bad
input, 3: disk full, 1: the run stopped; 1 when it was killed by a signal), not always 1.
Everything else (restarts, SIGINT) is torchrun's own behaviour.
"""

from __future__ import annotations

import os
import signal
import sys

# the signals torchrun turns into SignalException itself; SIGTERM is handled below
OWN_SIGNALS = "SIGINT,SIGHUP,SIGQUIT"


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    stopping = []

    def on_sigterm(signum, frame):
        if stopping:  # already passing it on and waiting for the workers' save
            return
        stopping.append(signum)
        raise SignalException(f"Process {os.getpid()} got signal: SIGTERM", signal.SIGTERM)

    # torchrun's --signals-to-handle (its default, PET_..., names SIGTERM; older versions read
    # TORCHELASTIC_...): the others stay torchrun's, SIGTERM is on_sigterm's
    os.environ.setdefault("PET_SIGNALS_TO_HANDLE", OWN_SIGNALS)
    os.environ.setdefault("TORCHELASTIC_SIGNALS_TO_HANDLE", OWN_SIGNALS)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        torchrun_main(sys.argv[1:] if argv is None else argv)
    except SignalException as e:
        name = signal.Signals(e.sigval).name
        print(f"torchrun: stopped by {name}; the workers were passed it and have ended (each "
              "rank's last line says whether it saved a checkpoint)", file=sys.stderr)  # fmt: skip
        return 130
    except ChildFailedError as e:
        print(e, file=sys.stderr)  # torchrun's report: which rank failed, how, when
        code = e.get_first_failure()[1].exitcode
        return code if 0 < code < 256 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
