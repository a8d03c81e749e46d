"""Run control: what keeps a run alive and stoppable around the recipe. torchrun's environment
and process groups (:mod:`.torchrun`), a job across its torchrun restarts and Slurm requeues
(:mod:`.jobs`), torchrun for schedulers (:mod:`.launcher`, ``python -m
alexnet2012.control.launcher``), the watchdog that turns a silent peer into an error
(:mod:`.watchdog`), the run folder's lock (:mod:`.runlock`), the signal vote
(:mod:`.stopping`) and the hooks the reliability tests use (:mod:`.hooks`)."""
