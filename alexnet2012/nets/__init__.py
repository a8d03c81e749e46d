"""The networks, plain ``nn.Module``s that know nothing of processes: the two-tower AlexNet2012
(:mod:`.model`, its layers in :mod:`.layers`), the baselines (:mod:`.baselines`), building the
configured one (:mod:`.build`) and its per-layer table (:mod:`.summary`)."""
