"""Run a network: in one process as is, or one AlexNet2012 tower per rank.

The parallel plan is data (:mod:`.plan`): every canonical parameter has a placement, and
every layer whose ``cross`` flag is set gathers both towers' activations before it runs. The
network itself is the plain :class:`~alexnet2012.nets.model.AlexNet2012`; on two ranks
:func:`.parallelize.parallelize` rewrites it into this rank's tower, a module with the
exchanges of :mod:`.comm` in it (ref §1, [P] §3.5). :class:`Execution` holds that module with
the loss, the metrics' sums and the canonical state (:mod:`.state`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alexnet2012.config import Config
from alexnet2012.nets.build import build_model
from alexnet2012.parallel import comm, state
from alexnet2012.parallel.layers import local_exchanges
from alexnet2012.parallel.parallelize import parallelize
from alexnet2012.parallel.plan import PlanError, placement

__all__ = ["Execution", "PlanError", "build_execution", "placement"]


class Execution:
    """The model as this process runs it, with the loss, metrics and canonical state.

    In one process (``group.size == 1``) ``model`` is the whole module; on two ranks each rank
    keeps its tower's slices of the same, fully initialised module, as a
    :class:`~.parallelize.TowerNet` that exchanges at the cross layers.
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
        self.full_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if self.group.size > 1:
            model = parallelize(model, self.group, fc8, overlap)
        self.model = model
        self.replicated = None
        self.compiled = False
        self.compiled_for: set = set()  # what has run compiled: "train", (split, ten_view)

    @property
    def holds_logits(self) -> bool:
        return self.group.size == 1 or self.group.rank == 0 or self.fc8 == "split"

    # ----- running ----------------------------------------------------------------------------
    def replicate(self) -> None:
        """Average this tower's gradients over its data-parallel replicas with PyTorch's DDP,
        which wraps :attr:`model` as it is.

        Call after the model is on its device. Each replica's loss is the mean over its shard,
        so the average is the gradient of the whole global batch.
        """
        if self.data.size == 1:
            return
        from torch.nn.parallel import DistributedDataParallel

        device = state.device(self.model)
        self.replicated = DistributedDataParallel(
            self.model,
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
        return self.model(x)

    def compile(self) -> None:
        """``train.compile``: one process compiles the whole network (in place: DDP and the
        state keep the module); a rank compiles each run of blocks between two exchanges
        (:meth:`~.parallelize.TowerNet.compile_runs`), which stay eager."""
        self.compiled = True
        if self.group.size == 1:
            self.model.compile()
        else:
            self.model.compile_runs()

    def forward_alone(self, x: torch.Tensor) -> torch.Tensor | None:
        """conv1..fc7 of this rank with stand-ins for the exchanges (zeros for the peers'
        activations), nothing exchanged, when compiled on two ranks (else None): run (and
        backpropagated) before the first compiled step, it compiles this rank's graphs
        without a peer waiting meanwhile."""
        if not self.compiled or self.group.size == 1:
            return None
        with local_exchanges(self.model):
            return self.model.features(x)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy where the logits are; elsewhere a zero that carries the exchange back."""
        if self.holds_logits:
            return F.cross_entropy(out.float(), y)
        return out.sum()

    def share(self, values: torch.Tensor) -> torch.Tensor:
        """Sums of metric values (loss, counts) over the replicas, from each pair's head rank."""
        return comm.all_reduce_sum(comm.broadcast(values, self.group, src=0), self.data)

    # ----- state (:mod:`.state`) ------------------------------------------------------------
    def named_parameters(self):
        return self.model.named_parameters()

    def param_bytes(self) -> int:
        return state.param_bytes(self.model)

    def gather(self, name: str, local: torch.Tensor | None) -> torch.Tensor:
        """The full canonical tensor for parameter ``name`` from each rank's piece."""
        dev = state.device(self.model)
        return state.gather(name, local, self.group, self.fc8, self.full_shapes, dev)

    def canonical_state(self) -> dict[str, torch.Tensor]:
        return state.canonical_state(self.model, self.group, self.fc8, self.full_shapes)

    def load_canonical(self, sd: dict[str, torch.Tensor]) -> None:
        state.load_canonical(self.model, sd, self.group, self.fc8, self.full_shapes)

    def canonical_by_name(self, by_name: dict[str, dict]) -> dict[str, dict]:
        return state.canonical_by_name(self.model, by_name, self.group, self.fc8, self.full_shapes)

    def local_by_name(self, canonical: dict[str, dict]) -> dict[str, dict]:
        return state.local_by_name(self.model, canonical, self.group, self.fc8)


def build_execution(cfg: Config, env, num_classes: int, in_channels: int):
    """``(ex, forward)``: the configured network as this rank runs it in training and in bench.

    The whole net is built from one seed and this rank keeps its tower's slices
    (``parallel.fc8``, ``parallel.overlap``), on ``env.device`` in the configured memory layout,
    its gradients averaged over the tower's data-parallel replicas; compiled (:meth:`compile`)
    when ``train.compile`` is set.
    """
    model = build_model(cfg, num_classes, in_channels)
    ex = Execution(model, env.group, cfg.parallel.fc8, cfg.parallel.overlap, env.data)
    ex.model.to(env.device)
    if cfg.train.channels_last:
        ex.model.to(memory_format=torch.channels_last)
    ex.replicate()
    if cfg.train.compile:
        ex.compile()
    return ex, ex.forward
