"""Canonical <-> local state: one full tensor per parameter (the one-process layout that
checkpoints, exports and both executions share), and each rank's slices of it (ref §1).

Functions of the module a process runs (the plain net in one process, a rank's
:class:`~alexnet2012.parallel.parallelize.TowerNet` on two), of its tower ``group``, of where
fc8 lives (``fc8``, :func:`~alexnet2012.parallel.plan.placement`) and of the canonical shapes
(``full_shapes``: name -> shape, taken from the whole net before it was split).
"""

from __future__ import annotations

import torch
from torch import nn

from alexnet2012.parallel import comm
from alexnet2012.parallel.plan import PlanError, local_slice, placement


def gather(
    name: str, local: torch.Tensor | None, group: comm.TowerGroup, fc8: str, shapes: dict, device
) -> torch.Tensor:
    """The full canonical tensor for parameter ``name`` from each rank's piece (``local``: this
    rank's, None where it holds none; ``device``: where the broadcast of a whole one runs)."""
    if group.size == 1:
        return local
    where = placement(name, fc8)
    if where[0] == "dim":
        return comm.all_gather_cat(local.contiguous(), group, where[1])
    buf = local.detach().clone() if local is not None else torch.empty(shapes[name])
    return comm.broadcast(buf.to(device), group, src=0)


def canonical_state(
    model: nn.Module, group: comm.TowerGroup, fc8: str, shapes: dict
) -> dict[str, torch.Tensor]:
    """The whole network's state dict in the canonical (one-process) layout, on every rank."""
    local = dict(model.state_dict()) if group.size == 1 else dict(model.named_parameters())
    dev = device(model)
    return {k: gather(k, local.get(k), group, fc8, shapes, dev).detach().cpu() for k in shapes}


def load_canonical(
    model: nn.Module, state: dict, group: comm.TowerGroup, fc8: str, shapes: dict
) -> None:
    """Load a canonical state dict (from either kind of run) into ``model``'s slices."""
    missing = sorted(set(shapes) - set(state))
    wrong = [k for k in shapes if k in state and tuple(state[k].shape) != shapes[k]]
    if missing or wrong:
        raise PlanError(
            f"checkpoint does not fit this network: missing {missing[:3]}, "
            f"shape mismatch {wrong[:3]}; was it trained with another model config?"
        )
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(local_slice(name, state[name], fc8, group.rank, group.size))


def canonical_by_name(
    model: nn.Module, by_name: dict, group: comm.TowerGroup, fc8: str, shapes: dict
) -> dict[str, dict]:
    """Gather per-parameter optimizer state (same shapes as the parameters) to canonical."""
    out, dev = {}, device(model)
    for name in shapes:
        entry = by_name.get(name, {})
        has = torch.tensor([float("momentum_buffer" in entry)], device=dev)
        has = comm.all_reduce_sum(has, group) if group.size > 1 else has
        if has.item() == 0:
            continue
        local = entry.get("momentum_buffer")
        out[name] = {"momentum_buffer": gather(name, local, group, fc8, shapes, dev).detach().cpu()}
    return out


def local_by_name(
    model: nn.Module, canonical: dict, group: comm.TowerGroup, fc8: str
) -> dict[str, dict]:
    """``model``'s slices of canonical per-parameter optimizer state."""
    out = {}
    for name, _ in model.named_parameters():
        if name in canonical:
            out[name] = {
                k: local_slice(name, v, fc8, group.rank, group.size)
                for k, v in canonical[name].items()
            }
    return out


def device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters are."""
    return next(model.parameters()).device


def param_bytes(model: nn.Module) -> int:
    """The bytes of ``model``'s parameters (this rank's slices on two)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())
