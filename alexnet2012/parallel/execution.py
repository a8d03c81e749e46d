"""Run a network: in one process as is, or one AlexNet2012 tower per rank.

The parallel plan is data (:mod:`.plan`): every canonical parameter has a placement, and
every layer whose ``cross`` flag is set gathers both towers' activations before it runs. The
network itself is the plain :class:`~alexnet2012.nets.model.AlexNet2012`; :class:`Execution`
only slices its parameters and inserts the exchanges of :mod:`.comm` (ref §1, [P] §3.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alexnet2012.config import Config
from alexnet2012.nets.build import build_model
from alexnet2012.nets.layers import TowerOp
from alexnet2012.parallel import comm
from alexnet2012.parallel.plan import PlanError, placement, refusal
from alexnet2012.parallel.state import CanonicalState

__all__ = ["Execution", "PlanError", "build_execution", "placement"]


class Execution(CanonicalState):
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
        self.compiled = False
        self.compiled_for: set = set()  # what has run compiled: "train", (split, ten_view)
        self._whole = model  # what one process runs (compiled by compile())
        if self.group.size > 1:
            _shard(self, model)
        self._runs = _segments(model, overlap) if self.group.size > 1 else []

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
            return self._whole(x)
        g, fc8 = self.group, self.model.blocks()[-1]
        x = self._before_fc8(x, local=False)
        if self.fc8 == "split":
            return comm.sum_partials(fc8(x), g, "fc8")
        x = comm.gather_to_head(x, g, "fc8")
        return fc8(x) if g.rank == 0 else x

    def _before_fc8(self, x: torch.Tensor, local: bool) -> torch.Tensor:
        """conv1..fc7 on this rank: the runs of blocks between exchanges; ``local``: stand-ins
        for the exchanges' results (shapes, dtypes, strides), nothing exchanged."""
        g = self.group
        for kind, name, run in self._runs:
            if kind == "swap":
                x = _overlapped(run, x, g, local)
                continue
            if kind == "gather":  # exchanges follow pooling, as in [P] §3.5: 13x13, 6x6, 2048
                x = comm.gathered_stand_in(x, g) if local else comm.gather_towers(x, g, name)
            x = run(x)  # (N, C/2, ...) this tower's channels
        return x

    def compile(self) -> None:
        """``train.compile``: one process compiles the whole network; a rank compiles each run
        of blocks between two exchanges, which stay eager (collectives, counters and CUDA
        events are no graph material), so a tower's conv stack is one graph up to its exchange.
        fc8 (on one rank, or split) stays eager: one matrix product, not worth a graph."""
        self.compiled = True
        if self.group.size == 1:
            self._whole = torch.compile(self.model)
            return
        self._runs = [(k, n, r if k == "swap" else torch.compile(r)) for k, n, r in self._runs]

    def forward_alone(self, x: torch.Tensor) -> torch.Tensor | None:
        """conv1..fc7 of this rank with zeros standing in for the peers' activations, nothing
        exchanged, when compiled on two ranks (else None): run (and backpropagated) before the
        first compiled step, it compiles this rank's graphs without a peer waiting meanwhile."""
        if not self.compiled or self.group.size == 1:
            return None
        return self._before_fc8(x, local=True)

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


class _Tower(nn.Module):
    """An execution as a module, so DistributedDataParallel can wrap one tower's parameters."""

    def __init__(self, ex: Execution):
        super().__init__()
        self.model = ex.model
        self._forward = ex.forward_local

    def forward(self, x):
        return self._forward(x)


def _shard(ex: Execution, model: nn.Module) -> None:
    """Keep this rank's tower of ``model``: its slices of every parameter (:mod:`.plan`)."""
    if (why := refusal(model)) is not None:
        raise PlanError(why)
    if ex.group.size != 2:
        raise PlanError(f"a tower pair needs exactly 2 ranks, got {ex.group.size}")
    r = ex.group.rank
    with torch.no_grad():
        for block in model.blocks():
            for kind in ("weight", "bias"):
                full = getattr(block, kind)
                local = ex._slice(f"{block.name}.{kind}", full)
                setattr(block, kind, None if local is None else nn.Parameter(local.clone()))
            block.groups = 1  # a rank's slice reads one tower, or the gathered input
            for m in block.modules():
                if isinstance(m, TowerOp):
                    m.towers, m.tower = 1, r
    if r != 0 and ex.fc8 == "rank0":
        model.fc8 = None  # [C12]: fc8 and the softmax live on GPU0 only


def _segments(model: nn.Module, overlap: bool) -> list[tuple[str, str, nn.Module]]:
    """conv1..fc7 of a rank as runs of blocks that start at an exchange: ("", "conv1",
    conv1-conv2), ("gather", "conv3", conv3-conv5), ("gather", "fc6", fc6), ... for the paper's
    cross layers; an overlapped cross layer ("swap") is a run of its own."""
    runs: list = []
    for block in model.blocks()[:-1]:
        if block.cross and overlap:
            runs.append(("swap", block.name, [block]))
        elif block.cross or not runs or runs[-1][0] == "swap":
            runs.append(("gather" if block.cross else "", block.name, [block]))
        else:
            runs[-1][2].append(block)
    return [(k, n, b[0] if k == "swap" else nn.Sequential(*b)) for k, n, b in runs]


def _overlapped(block, x: torch.Tensor, g: comm.TowerGroup, local: bool) -> torch.Tensor:
    """A cross layer as own-tower part + peer part (ref §1: one weight block per input tower,
    outputs summed), the exchange running while the own part is computed (``local``: zeros
    stand in for the peer's activation, nothing is exchanged)."""
    r = g.rank
    w = block.weight.chunk(2, dim=1)  # input columns of tower 0, of tower 1
    x = block.pre(x)
    if local:  # the peer's activation arrives as swap_start sends ours: contiguous
        own, peer = block.op(x, w[r], block.bias), torch.zeros_like(x.contiguous())
    else:
        buf, pending = comm.swap_start(x, g, block.name)
        own = block.op(x, w[r], block.bias)
        peer = comm.swap_finish(buf, pending)
    return block.post(own + block.op(peer, w[1 - r], None))


def build_execution(cfg: Config, env, num_classes: int, in_channels: int):
    """``(ex, forward)``: the configured network as this rank runs it in training and in bench.

    The whole net is built from one seed and this rank keeps its tower's slices
    (``parallel.fc8``, ``parallel.overlap``), on ``env.device`` in the configured memory layout,
    its gradients averaged over the tower's data-parallel replicas; compiled (:meth:`compile`)
    when ``train.compile`` is set.
    """
    model = build_model(cfg, num_classes, in_channels)
    ex = Execution(model, env.group, cfg.parallel.fc8, cfg.parallel.overlap, env.data)
    model.to(env.device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    ex.replicate()
    if cfg.train.compile:
        ex.compile()
    return ex, ex.forward
