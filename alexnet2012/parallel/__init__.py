"""Running a network across processes: the exchanges (:mod:`.comm`, the only caller of
collectives), torchrun's environment and process groups (:mod:`.torchrun`), the split plan
(:mod:`.plan`), the execution that runs one tower per rank (:mod:`.execution`) and the
canonical <-> per-rank state (:mod:`.state`)."""
