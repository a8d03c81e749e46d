"""Optimiser, parameter groups and name-keyed optimiser state (schedules: :mod:`.schedule`).

Spec §2 / [P] §5: SGD, momentum 0.9, weight decay 0.0005. [C12]: biases have their own lr
(``bias_lr_mult`` x the weight lr) and no weight decay (ref §1.3).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from alexnet2012.config import TrainConfig

log = logging.getLogger(__name__)


def param_groups(named_params: Iterable[tuple[str, nn.Parameter]], cfg: TrainConfig) -> list[dict]:
    """Split parameters into a "weights" and a "biases" group (every 1-D parameter is a bias).

    Each group carries ``name``, ``lr_mult`` (its lr is ``cfg.lr * lr_mult`` before any schedule
    drop), ``weight_decay`` and ``param_names``, the parameter names in the order of ``params``.
    Biases: lr x ``bias_lr_mult``, decay 0 unless ``bias_decay`` ([C12], ref §1.3). Under the
    ``c12`` schedule conv1's weights and biases form groups of their own ("conv1 weights",
    "conv1 biases"): the 2012 code slowed and then froze conv1 alone (ref §2). Empty groups
    are left out.
    """
    own_conv1 = cfg.schedule == "c12"
    groups = {}
    for prefix in ("", "conv1 ") if own_conv1 else ("",):
        groups[f"{prefix}weights"] = {"lr_mult": 1.0, "weight_decay": cfg.weight_decay}
        groups[f"{prefix}biases"] = {
            "lr_mult": cfg.bias_lr_mult,
            "weight_decay": cfg.weight_decay if cfg.bias_decay else 0.0,
        }
    for name, group in groups.items():
        group.update(name=name, params=[], param_names=[], lr=cfg.lr * group["lr_mult"])
    for name, p in named_params:
        layer = "conv1 " if own_conv1 and name.split(".")[0] == "conv1" else ""
        group = groups[layer + ("biases" if p.dim() == 1 else "weights")]
        group["params"].append(p)
        group["param_names"].append(name)
    return [g for g in groups.values() if g["params"] or g["name"] in ("weights", "biases")]


class PaperSGD(torch.optim.Optimizer):
    """The update rule of [P] §5, with the learning rate inside the velocity.

    ``v <- m*v - wd*lr*w - lr*g ; w <- w + v``. The state key is ``"momentum_buffer"`` with torch
    SGD's sign convention (the buffer points along the gradient and is subtracted): we store
    ``buf = -v``, so ``buf <- m*buf + lr*(g + wd*w) ; w <- w - buf``. Torch's buffer excludes lr
    (``w <- w - lr*buf``), so at a constant lr ours equals ``lr`` x torch's and the two optimisers
    give the same weights; after an lr change the stored velocity keeps the old lr scale (ref §2).
    With momentum 0 no buffer is kept, as in torch.
    """

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"lr, momentum and weight_decay must be >= 0: {lr}, {momentum}, {weight_decay}"
            )
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                step = p.grad.mul(lr)  # lr*g
                if wd:
                    step.add_(p, alpha=wd * lr)  # + wd*lr*w
                if m:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        state["momentum_buffer"] = buf = step
                    else:
                        buf.mul_(m).add_(step)
                    step = buf
                p.sub_(step)
        return loss


def build_optimizer(
    model_named_params: Iterable[tuple[str, nn.Parameter]], cfg: TrainConfig
) -> torch.optim.Optimizer:
    """torch SGD (``update="pytorch"``) or :class:`PaperSGD` (``"paper"``), :func:`param_groups`.

    ``momentum=0`` and ``weight_decay=0`` give plain SGD (the [D2L] recipe).
    """
    groups = param_groups(model_named_params, cfg)
    if cfg.update == "paper":
        opt = PaperSGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    elif cfg.update == "pytorch":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    else:
        raise ValueError(f"train.update: {cfg.update!r} is not one of pytorch, paper")
    for g in opt.param_groups:
        n, lr, wd = len(g["params"]), g["lr"], g["weight_decay"]
        log.info("%s: %d tensors, lr %.3g, weight decay %.3g", g["name"], n, lr, wd)
    return opt


def _named(optimizer: torch.optim.Optimizer):
    for group in optimizer.param_groups:
        names = group.get("param_names")
        if names is None:
            raise ValueError(
                "optimizer param groups lack 'param_names'; build it with param_groups()"
            )
        yield from zip(names, group["params"], strict=True)


def optimizer_state_by_name(optimizer: torch.optim.Optimizer) -> dict[str, dict[str, Tensor]]:
    """Per-parameter state keyed by parameter NAME (copies), so another process can re-shard it."""
    out = {}
    for name, p in _named(optimizer):
        items = optimizer.state.get(p, {}).items()
        state = {k: v.detach().clone() for k, v in items if isinstance(v, Tensor)}
        if state:
            out[name] = state
    return out


def load_optimizer_state_by_name(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load :func:`optimizer_state_by_name` output; a name without an entry starts with no momentum.

    Entries for parameters this optimiser does not hold (another shard's) are ignored.
    """
    loaded = {}  # everything is checked before the optimiser is touched
    for name, p in _named(optimizer):
        loaded[p] = {}
        for key, value in (state.get(name) or {}).items():
            if value.dim() > 0 and value.shape != p.shape:
                raise ValueError(
                    f"optimizer state {name}.{key}: shape {tuple(value.shape)} does "
                    f"not match the parameter's {tuple(p.shape)}"
                )
            dtype = p.dtype if value.is_floating_point() else value.dtype
            loaded[p][key] = value.detach().to(device=p.device, dtype=dtype).clone()
    for p, new in loaded.items():
        optimizer.state.pop(p, None)
        if new:
            optimizer.state[p] = new
