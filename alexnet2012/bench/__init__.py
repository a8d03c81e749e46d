"""``alexnet2012 bench``: the command (:mod:`.command`), timing the training step training runs
in fresh processes (:mod:`.measure`) and the report rows (:mod:`.rows`)."""
