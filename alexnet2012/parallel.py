"""Run a network: in one process as is, or one AlexNet2012 tower per rank.

The parallel plan is data: every canonical parameter has a placement (:func:`placement`), and
every layer whose ``cross`` flag is set gathers both towers' activations before it runs. The
network itself is the plain :class:`~alexnet2012.model.AlexNet2012`; :class:`Execution` only
slices its parameters and inserts the exchanges of :mod:`alexnet2012.comm` (ref §1, [P] §3.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import comm
from .layers import CrossLRN, TowerOp
from .model import AlexNet2012


class PlanError(ValueError):
    """The network cannot be split the way the configuration asks."""


def placement(name: str, fc8: str) -> tuple:
    """Where canonical parameter ``name`` lives across the two towers.

    ``("dim", d)``: rank r holds chunk r along dim d (each tower's own output units; fc8 split
    by input halves). ``("head",)``: the head rank holds it whole (fc8 as in [C12], ref §1).
    """
    layer, kind = name.split(".")
    if layer != "fc8":
        return ("dim", 0)  # a tower computes its own half of every layer's outputs
    if fc8 == "rank0":
        return ("head",)
    return ("dim", 1) if kind == "weight" else ("head",)  # split: partial logits, one bias


class Execution:
    """The model as this process runs it, with the loss, metrics and canonical state.

    In one process (``group.size == 1``) it runs the whole module; on two ranks each rank keeps
    its tower's slices of the same, fully initialised module and exchanges at the cross layers.
    """

    def __init__(
        self,
        model: nn.Module,
        group: comm.TowerGroup | None = None,
        fc8: str = "rank0",
        overlap: bool = False,
        data: comm.TowerGroup | None = None,
    ):
        self.group = group or comm.single()
        self.data = data or comm.single()  # the replicas of this tower (data parallelism)
        self.fc8, self.overlap = fc8, overlap
        self.replicated = None
        self.model = model
        self.full_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if self.group.size > 1:
            self._shard(model)

    # ----- the plan ---------------------------------------------------------------------------
    def _shard(self, model: nn.Module) -> None:
        if not isinstance(model, AlexNet2012):
            raise PlanError("only the two-tower alexnet2012 model can run on two ranks")
        if model.towers != 2:
            raise PlanError("the one-column 'half' net has a single tower: run it in one process")
        if any(isinstance(m, CrossLRN) for m in model.modules()):
            raise PlanError(
                "this preset's LRN runs across the tower boundary (Caffe's): run it in one process"
            )
        if self.group.size != 2:
            raise PlanError(f"a tower pair needs exactly 2 ranks, got {self.group.size}")
        r = self.group.rank
        with torch.no_grad():
            for block in model.blocks():
                for kind in ("weight", "bias"):
                    full = getattr(block, kind)
                    local = self._slice(f"{block.name}.{kind}", full)
                    setattr(block, kind, None if local is None else nn.Parameter(local.clone()))
                block.groups = 1  # a rank's slice reads one tower, or the gathered input
                for m in block.modules():
                    if isinstance(m, TowerOp):
                        m.towers, m.tower = 1, r
        if r != 0 and self.fc8 == "rank0":
            model.fc8 = None  # [C12]: fc8 and the softmax live on GPU0 only

    def _slice(self, name: str, full: torch.Tensor) -> torch.Tensor | None:
        where = placement(name, self.fc8)
        if where[0] == "head":
            return full if self.group.rank == 0 else None
        return full.chunk(self.group.size, dim=where[1])[self.group.rank]

    @property
    def holds_logits(self) -> bool:
        return self.group.size == 1 or self.group.rank == 0 or self.fc8 == "split"

    # ----- running ----------------------------------------------------------------------------
    def replicate(self) -> None:
        """Average this tower's gradients over its data-parallel replicas with PyTorch's DDP.

        Call after the model is on its device. Each replica's loss is the mean over its shard,
        so the average is the gradient of the whole global batch.
        """
        if self.data.size == 1:
            return
        from torch.nn.parallel import DistributedDataParallel

        device = next(self.model.parameters()).device
        self.replicated = DistributedDataParallel(
            _Tower(self),
            device_ids=[device] if device.type == "cuda" else None,
            process_group=self.data.group,
        )  # the nets have no buffers: DDP's buffer sync has nothing to do

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes); on a rank without the classifier an (N, 0) stand-in."""
        if self.replicated is not None and torch.is_grad_enabled():
            return self.replicated(x)
        return self.forward_local(x)

    def forward_local(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` without the data-parallel wrapper."""
        if self.group.size == 1:
            return self.model(x)
        g, blocks = self.group, self.model.blocks()
        for block in blocks[:-1]:
            if block.cross and self.overlap:
                x = self._overlapped(block, x)
                continue
            if block.cross:  # exchanges follow pooling, as in [P] §3.5: 13x13, 6x6, 2048
                x = comm.gather_towers(x, g, block.name)
            x = block(x)  # (N, C/2, ...) this tower's channels
        if self.fc8 == "split":
            return comm.sum_partials(blocks[-1](x), g, "fc8")
        x = comm.gather_to_head(x, g, "fc8")
        return blocks[-1](x) if g.rank == 0 else x

    def _overlapped(self, block, x: torch.Tensor) -> torch.Tensor:
        """A cross layer as own-tower part + peer part (ref §1: one weight block per input
        tower, outputs summed), the exchange running while the own part is computed."""
        r = self.group.rank
        w = block.weight.chunk(2, dim=1)  # input columns of tower 0, of tower 1
        x = block.pre(x)
        buf, pending = comm.swap_start(x, self.group, block.name)
        own = block.op(x, w[r], block.bias)
        peer = comm.swap_finish(buf, pending)
        return block.post(own + block.op(peer, w[1 - r], None))

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy where the logits are; elsewhere a zero that carries the exchange back."""
        if self.holds_logits:
            return F.cross_entropy(out.float(), y)
        return out.sum()

    def share(self, values: torch.Tensor) -> torch.Tensor:
        """Sums of metric values (loss, counts) over the replicas, from each pair's head rank."""
        return comm.all_reduce_sum(comm.broadcast(values, self.group, src=0), self.data)

    def named_parameters(self):
        return self.model.named_parameters()

    # ----- canonical state --------------------------------------------------------------------
    def gather(self, name: str, local: torch.Tensor | None) -> torch.Tensor:
        """The full canonical tensor for parameter ``name`` from each rank's piece."""
        if self.group.size == 1:
            return local
        where = placement(name, self.fc8)
        if where[0] == "dim":
            return comm.all_gather_cat(local.contiguous(), self.group, where[1])
        shape = self.full_shapes[name]
        buf = local.detach().clone() if local is not None else torch.empty(shape)
        return comm.broadcast(buf.to(self._device()), self.group, src=0)

    def canonical_state(self) -> dict[str, torch.Tensor]:
        """The whole network's state dict in the canonical (one-process) layout, on every rank."""
        local = dict(self.model.state_dict()) if self.group.size == 1 else self._local_params()
        return {k: self.gather(k, local.get(k)).detach().cpu() for k in self.full_shapes}

    def load_canonical(self, state: dict[str, torch.Tensor]) -> None:
        """Load a canonical state dict (from either kind of run) into this process's slices."""
        missing = sorted(set(self.full_shapes) - set(state))
        wrong = [
            k
            for k in self.full_shapes
            if k in state and tuple(state[k].shape) != self.full_shapes[k]
        ]
        if missing or wrong:
            raise PlanError(
                f"checkpoint does not fit this network: missing {missing[:3]}, "
                f"shape mismatch {wrong[:3]}; was it trained with another model config?"
            )
        params = self._local_params()
        with torch.no_grad():
            for name, p in params.items():
                piece = self._slice(name, state[name])
                p.copy_(piece)

    def canonical_by_name(self, by_name: dict[str, dict]) -> dict[str, dict]:
        """Gather per-parameter optimizer state (same shapes as the parameters) to canonical."""
        out = {}
        for name in self.full_shapes:
            entry = by_name.get(name, {})
            has = torch.tensor([float("momentum_buffer" in entry)], device=self._device())
            has = comm.all_reduce_sum(has, self.group) if self.group.size > 1 else has
            if has.item() == 0:
                continue
            local = entry.get("momentum_buffer")
            out[name] = {"momentum_buffer": self.gather(name, local).detach().cpu()}
        return out

    def local_by_name(self, canonical: dict[str, dict]) -> dict[str, dict]:
        """This process's slice of canonical per-parameter optimizer state."""
        params, out = self._local_params(), {}
        for name in params:
            if name in canonical:
                out[name] = {k: self._slice(name, v) for k, v in canonical[name].items()}
        return out

    def _local_params(self) -> dict[str, torch.Tensor]:
        return dict(self.model.named_parameters())

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def param_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())


class _Tower(nn.Module):
    """An execution as a module, so DistributedDataParallel can wrap one tower's parameters."""

    def __init__(self, ex: Execution):
        super().__init__()
        self.model = ex.model
        self._forward = ex.forward_local

    def forward(self, x):
        return self._forward(x)
