"""Canonical <-> local state: one full tensor per parameter (the one-process layout that
checkpoints, exports and both executions share), and each rank's slices of it (ref §1).

:class:`CanonicalState` is mixed into :class:`~alexnet2012.parallel.execution.Execution`; it
needs ``group``, ``fc8``, ``model`` and ``full_shapes`` from it.
"""

from __future__ import annotations

import torch

from alexnet2012.parallel import comm
from alexnet2012.parallel.plan import PlanError, local_slice, placement


class CanonicalState:
    """Gathering this rank's slices into canonical tensors, and slicing canonical ones."""

    def _slice(self, name: str, full: torch.Tensor) -> torch.Tensor | None:
        return local_slice(name, full, self.fc8, self.group.rank, self.group.size)

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
                p.copy_(self._slice(name, state[name]))

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
