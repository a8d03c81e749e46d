"""The one training step: what ``train`` runs and what ``bench`` times.

A step is dropout masks for (seed, step, replica), the forward pass under the configured
autocast and memory layout, the loss where the logits are, the backward pass (the exchanges'
backward halves included) and one optimiser update. Nothing in it waits for the device: the
batch arrives through non-blocking copies (data/transforms.py), the masks are drawn on the
device, and the loss stays a device tensor (tests/test_gpu.py runs it under
``torch.cuda.set_sync_debug_mode("error")``).
"""

from __future__ import annotations

import torch

from alexnet2012.config import Config
from alexnet2012.control import hooks, watchdog
from alexnet2012.nets.layers import set_dropout_step
from alexnet2012.parallel import comm


def autocast(cfg: Config, device: torch.device):
    """bf16 autocast when ``train.amp`` is set and the device is a GPU; else a no-op."""
    on = cfg.train.amp and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def layout(x: torch.Tensor, cfg: Config) -> torch.Tensor:
    """``x`` in the configured memory layout (channels_last when ``train.channels_last``)."""
    return x.contiguous(memory_format=torch.channels_last) if cfg.train.channels_last else x


def dropout_seed(cfg: Config, replica: int) -> int:
    """The dropout masks' seed of data-parallel replica ``replica``: each draws its own."""
    return cfg.seed + 1_000_003 * replica


class TrainStep:
    """``step(x, y, i) -> (loss, logits)``: training step ``i`` (0-based) on the batch (x, y).

    ``ex``/``forward``: the execution and its (possibly compiled) forward; ``rank``: the global
    rank, for the hooks. The loss is this rank's: the cross-entropy where the logits are, a zero
    that carries the exchanges back elsewhere.
    """

    def __init__(self, cfg: Config, ex, forward, opt: torch.optim.Optimizer, rank: int = 0):
        self.cfg, self.ex, self.forward, self.opt, self.rank = cfg, ex, forward, opt, rank
        self.device = next(ex.model.parameters()).device
        self.seed = dropout_seed(cfg, ex.data.rank)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, i: int):
        x = layout(x, self.cfg)
        # masks: f(seed, step, replica), drawn now, outside a compiled forward
        set_dropout_step(self.ex.model, i, self.seed, x.shape[0], self.device)
        if getattr(self.ex, "compiled", False) and "train" not in self.ex.compiled_for:
            self._compile_first(x)
        with autocast(self.cfg, self.device):
            out = self.forward(x)
            loss = hooks.current().loss(self.ex.loss(out, y), i + 1, self.rank)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        watchdog.beat()  # progress, for the stall watchdog (NCCL)
        return loss, out

    def _compile_first(self, x: torch.Tensor) -> None:
        """Before the first compiled step: each rank compiles its graphs on its own (no peer
        waits in an exchange meanwhile), then the ranks wait for the slowest, all under the
        patient timeout (control/watchdog.py). The gradients it leaves are zeroed below."""
        ex = self.ex
        with watchdog.patient(self.cfg, watchdog.groups_of(ex)):
            with autocast(self.cfg, self.device):
                probe = ex.forward_alone(x)
            if probe is not None:
                probe.float().sum().backward()
            comm.barrier(ex.group)  # the pair's partner has compiled too
            comm.barrier(ex.data)  # and this tower's replicas
        ex.compiled_for.add("train")
