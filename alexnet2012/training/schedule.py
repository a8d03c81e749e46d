"""Learning-rate schedules: constant, the paper's plateau rule and the 2012 code's epoch table.

Each has ``begin_epoch(epoch)`` (called before an epoch's first step, also after a resume),
``step(val_err)`` (after an epoch's validation; True when it dropped the lr), ``apply()`` and a
``state_dict``. A group's lr is ``base_lr * lr_mult * factor``; ``lr_mult`` comes from
:func:`~alexnet2012.training.optim.param_groups`.
"""

from __future__ import annotations

import logging
import math

import torch

from alexnet2012.config import TrainConfig

log = logging.getLogger(__name__)

# ref §2: the 2012 code's schedule, from the notes at the end of [C12]
# layers/layer-params-145.cfg (1-based epochs, as cuda-convnet counts them): from each epoch on,
# the factor of each group's starting lr. Weights 0.01 -> 0.001 at 25, 0.0001 at 51, 0.00001 at
# 79; conv1's weights 0.00001 at 67 and 0 at 72. The notes never change epsB: the file's final
# state keeps every bias at 0.02 except conv1's, 0 (frozen with conv1's weights at 72).
C12_TABLE = (
    (1, {"weights": 1.0, "biases": 1.0, "conv1 weights": 1.0, "conv1 biases": 1.0}),
    (25, {"weights": 0.1, "conv1 weights": 0.1}),
    (51, {"weights": 0.01, "conv1 weights": 0.01}),
    (67, {"conv1 weights": 0.001}),
    (72, {"conv1 weights": 0.0, "conv1 biases": 0.0}),
    (79, {"weights": 0.001}),
)
C12_COLOUR_NOISE_EPOCHS = 66  # [C12] notes: colour noise 0.1 -> 0 at (1-based) epoch 67


class ConstantSchedule:
    """The lr never changes; same interface as :class:`PlateauSchedule`."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float):
        self.optimizer, self.base_lr = optimizer, base_lr
        self.drops = 0

    @property
    def factor(self) -> float:
        return 0.1**self.drops

    def apply(self) -> None:
        """Set each group's lr = base_lr * lr_mult * factor."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr * group.get("lr_mult", 1.0) * self.factor

    def begin_epoch(self, epoch: int) -> None:
        """Called before the first step of ``epoch`` (0-based); these schedules keep their lr."""

    def step(self, val_err: float) -> bool:
        """Record one epoch's validation error; True if the lr was dropped."""
        return False

    def state_dict(self) -> dict:
        return {"drops": self.drops}

    def load_state_dict(self, state: dict) -> None:
        self.drops = state.get("drops", 0)
        self.apply()


class PlateauSchedule(ConstantSchedule):
    """lr / 10 when the validation error has not improved for more than ``patience`` epochs.

    Spec §2 / [P] §5: "divided by 10 when the validation error stopped improving", three times.
    ``patience=0`` drops at the first epoch that does not beat the best error so far. After a
    drop the count of epochs without improvement restarts; at most ``max_drops`` drops.
    """

    def __init__(self, optimizer, base_lr: float, patience: int = 0, max_drops: int = 3):
        super().__init__(optimizer, base_lr)
        self.patience, self.max_drops = patience, max_drops
        self.best, self.bad_epochs = math.inf, 0

    def step(self, val_err: float) -> bool:
        if val_err < self.best:
            self.best, self.bad_epochs = val_err, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs <= self.patience or self.drops >= self.max_drops:
            return False
        self.drops, self.bad_epochs = self.drops + 1, 0
        self.apply()
        log.info(
            "val error %.4f not below best %.4f: lr drop %d/%d, lr factor %.0e",
            val_err,
            self.best,
            self.drops,
            self.max_drops,
            self.factor,
        )
        return True

    def state_dict(self) -> dict:
        return {"drops": self.drops, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state.get("best", math.inf), state.get("bad_epochs", 0)
        super().load_state_dict(state)


class C12Schedule(ConstantSchedule):
    """The 2012 code's schedule (:data:`C12_TABLE`): each group's lr is a function of the epoch.

    Validation errors do not move it, so a resume at any step continues exactly: the lr is
    set again at :meth:`begin_epoch`. Groups the table does not name keep factor 1.
    """

    def __init__(self, optimizer, base_lr: float):
        super().__init__(optimizer, base_lr)
        self.epoch = 0

    @staticmethod
    def factors(epoch: int) -> dict[str, float]:
        """The table's factor of each group in (0-based) ``epoch``."""
        out: dict[str, float] = {}
        for first, change in C12_TABLE:
            if epoch + 1 >= first:
                out.update(change)
        return out

    def apply(self) -> None:
        factors = self.factors(self.epoch)
        for group in self.optimizer.param_groups:
            f = factors.get(group.get("name", ""), 1.0)
            group["lr"] = self.base_lr * group.get("lr_mult", 1.0) * f

    @property
    def factor(self) -> float:
        return self.factors(self.epoch)["weights"]

    def begin_epoch(self, epoch: int) -> None:
        changed = self.factors(epoch) != self.factors(self.epoch)
        self.epoch = epoch
        self.apply()
        if changed:
            log.info("epoch %d: c12 schedule, lr factors %s", epoch + 1, self.factors(epoch))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state.get("epoch", 0)
        self.apply()


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> ConstantSchedule:
    """``plateau`` ([P] §5), ``c12`` (ref §2) or ``constant``, from ``cfg.schedule``."""
    if cfg.schedule == "c12":
        return C12Schedule(optimizer, cfg.lr)
    if cfg.schedule == "plateau":
        return PlateauSchedule(optimizer, cfg.lr, cfg.plateau_patience, cfg.max_drops)
    if cfg.schedule == "constant":
        return ConstantSchedule(optimizer, cfg.lr)
    raise ValueError(f"train.schedule: {cfg.schedule!r} is not one of plateau, c12, constant")
