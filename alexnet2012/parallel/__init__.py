"""Running a network across processes: the exchanges (:mod:`.comm`, the only caller of
collectives), torchrun's environment and process groups (:mod:`.torchrun`), a job across its
torchrun restarts and Slurm requeues (:mod:`.jobs`), torchrun for schedulers (:mod:`.launcher`,
``python -m alexnet2012.parallel.launcher``), the split plan
(:mod:`.plan`), the execution that runs one tower per rank (:mod:`.execution`) and the
canonical <-> per-rank state (:mod:`.state`)."""
