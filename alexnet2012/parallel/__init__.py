"""The two-tower split and nothing else: the plan of what each rank holds (:mod:`.plan`), the
execution that runs one tower per rank (:mod:`.execution`), the canonical <-> per-rank state
(:mod:`.state`) and the exchanges (:mod:`.comm`, the only caller of collectives). Starting,
watching and stopping the processes is run control (:mod:`alexnet2012.control`)."""
