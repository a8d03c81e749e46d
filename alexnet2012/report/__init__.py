"""Reports over finished runs: the comparison table and plots (:mod:`.compare`), first-layer
kernels per tower (:mod:`.kernels`, [P] §6.1 Fig. 3) and fc7 nearest neighbours
(:mod:`.neighbours`, [P] §6.1 Fig. 4). :mod:`.runs` reads the run folders they share."""
