"""Points at which code from outside can watch or disturb a training run.

The trainer calls :meth:`Hooks.start`, :meth:`Hooks.loss` and :meth:`Hooks.after_step`, and
checkpoint writing calls :meth:`Hooks.in_save`, on the hooks :func:`install` put in place. The
default hooks do nothing. The reliability tests install hooks that kill, hang or signal a rank
at a chosen step, or make a loss NaN (``tests/faults.py``).
"""

from __future__ import annotations


class Hooks:
    """Do-nothing hooks; subclass and :func:`install` to act at these points."""

    def start(self, rank: int) -> None:
        """Training is about to take its first step on ``rank``."""

    def loss(self, value, step: int, rank: int):
        """The loss of training step ``step`` (1-based) as the step will use it."""
        return value

    def after_step(self, step: int, rank: int) -> None:
        """Training step ``step`` is done on ``rank``."""

    def in_save(self, step: int, stage: str) -> None:
        """Checkpoint ``step`` is being written: ``payload`` (the ``.tmp`` file half written),
        ``sidecar`` (payload and checksum written, not renamed) or ``rename`` (renamed, older
        checkpoints not yet removed)."""


_installed: list[Hooks] = [Hooks()]


def current() -> Hooks:
    """The hooks in place."""
    return _installed[0]


def install(hooks: Hooks) -> Hooks:
    """Put ``hooks`` in place; the ones they replace."""
    previous, _installed[0] = _installed[0], hooks
    return previous
