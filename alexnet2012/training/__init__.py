"""Training a run: the loop (:mod:`.loop`) around the one training step (:mod:`.step`),
evaluation, the run and how it starts (:mod:`.run`), its checkpoints (:mod:`.checkpoint` files,
:mod:`.snapshot` contents and resume), optimiser and schedules, stopping on signals, tracking
(metrics files and W&B), results, and the init health report."""
